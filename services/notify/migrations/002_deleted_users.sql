-- Users whose account was deleted: events about them that arrive late (a redelivery, an order
-- status change in flight) must not write them a new inbox row or mail. Only the id is kept.
CREATE TABLE deleted_users (
  user_id uuid PRIMARY KEY,
  deleted_at timestamptz NOT NULL DEFAULT now()
);
