"""What every bridge to a partner platform (12345 hotline, 数字城管) needs, whatever the partner:

- `tables`: the bridge's own tables (external id ↔ case id links, the poll cursor, the queue);
- `inbound`: signed pushes verified (Standard Webhooks HMAC), partner payloads parsed with a
  reason, new orders accepted once per external id through the outbox onto `cases.submitted`;
- `poll`: the pull mode, a loop that reads the partner's feed after a cursor persisted in the
  same transaction as what it read;
- `queue`: a durable queue per channel (to the partner, to dispatch) with retries, backoff and
  order per case, that survives restarts;
- `metrics`, `settings`: the counters and the settings every bridge has.

A bridge service supplies the partner's payload models, its mapping and its HTTP calls.
"""
