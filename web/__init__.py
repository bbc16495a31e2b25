"""The Starlette app: dashboard, REST, websocket live streams, metrics."""
