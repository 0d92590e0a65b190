-- Transactional outbox: events written in the same transaction as the state they describe,
-- published to JetStream by the relay and deleted once acknowledged.
CREATE TABLE outbox (
  id uuid PRIMARY KEY,
  subject text NOT NULL,
  type text NOT NULL,
  payload bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  attempts int NOT NULL DEFAULT 0
);
CREATE INDEX outbox_created_at ON outbox (created_at);

-- Events a durable consumer has handled, so a redelivery is acknowledged without acting twice.
CREATE TABLE processed_events (
  consumer text NOT NULL,
  event_id text NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);
