from potok.cli.main import main

raise SystemExit(main())
