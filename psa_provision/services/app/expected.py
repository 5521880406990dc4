"""What verify holds the app to: through the gateway, GET /api/<service> with a valid token is answered
by the service itself with 200 (every service's bare prefix lists what it offers: the bundled app's
routers and crud.ts), and each /health says {"status": "ok"}."""

ROUTED_STATUS = 200
HEALTH_STATUS = "ok"
