// A real socket.io-client (npm) for tests/integration/test_socketio.py and
// test_realtime_session.py. Connects with `auth: {token}`, subscribes to CHANNEL, prints
// one JSON line per server event it receives ({"event": name, "body": ...}) and exits
// after COUNT events. With REAUTH_TOKEN it then re-authenticates with that token and
// subscribes to SECOND_CHANNEL (printing both acknowledgements) before "ready". A
// disconnect the client did not ask for is printed and ends the process (exit 4).
import { io } from "socket.io-client";

const {
  URL, TOKEN, CHANNEL, COUNT = "1", TRANSPORTS = "polling,websocket", AUTH_MODE = "connect",
  REAUTH_TOKEN, SECOND_CHANNEL,
} = process.env;
const wanted = Number(COUNT);
const print = (event, body) => console.log(JSON.stringify({ event, body }));

const socket = io(URL, {
  path: "/api/v1/socket.io",
  transports: TRANSPORTS.split(","),
  auth: AUTH_MODE === "connect" ? { token: TOKEN } : {},
  reconnection: false,
});

let seen = 0;
socket.onAny((event, body) => {
  print(event, body);
  if (body && body.type === "event" && ++seen >= wanted) {
    socket.close();
    process.exit(0);
  }
});
socket.on("connect", async () => {
  print("connect", { transport: socket.io.engine.transport.name });
  if (AUTH_MODE === "event") {
    print("ack:authenticate", await socket.emitWithAck("authenticate", { token: TOKEN }));
  }
  print("ack:subscribe", await socket.emitWithAck("subscribe", { channel: CHANNEL }));
  if (REAUTH_TOKEN) {
    print("ack:reauthenticate", await socket.emitWithAck("authenticate", { token: REAUTH_TOKEN }));
    print("ack:subscribe2", await socket.emitWithAck("subscribe", { channel: SECOND_CHANNEL }));
  }
  print("ready", {});
});
socket.on("disconnect", (reason) => {
  if (reason === "io client disconnect") return; // our own close, after COUNT events
  print("disconnect", { reason });
  process.exit(4);
});
socket.on("connect_error", (err) => {
  print("connect_error", { message: err.message });
  process.exit(2);
});
setTimeout(() => {
  print("timeout", {});
  process.exit(3);
}, 20000);
