"""`inboxsort web`: the review page, model versions, dashboard and /metrics (Starlette)."""
