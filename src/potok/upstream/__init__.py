"""The upstream side: services, targets, balancers, the HTTP client and its pools."""
