-- One conversation per pair of users: user_a is the smaller id, so a pair has one row whoever
-- wrote first, also when both write at once.
CREATE TABLE conversations (
  id uuid PRIMARY KEY,
  user_a uuid NOT NULL,
  user_b uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  CHECK (user_a < user_b),
  UNIQUE (user_a, user_b)
);

-- Each person's side of a conversation: their read mark and where it sorts in their list.
-- A deleted account's rows go, so its conversations disappear for it.
CREATE TABLE participants (
  user_id uuid NOT NULL,
  conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  -- The other person; NULL once they deleted their account.
  peer_id uuid,
  -- Position of the newest message read (0: none).
  read_position bigint NOT NULL DEFAULT 0,
  -- Position of the newest message, for sorting the list.
  last_position bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, conversation_id)
);
CREATE INDEX participants_recent ON participants (user_id, last_position DESC, conversation_id);

-- Messages; `position` orders them (one sequence for all conversations: increasing within each).
CREATE TABLE messages (
  id uuid PRIMARY KEY,
  conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  position bigint GENERATED ALWAYS AS IDENTITY,
  -- NULL would be a deleted sender; their messages are deleted instead (see the README).
  sender_id uuid NOT NULL,
  text text NOT NULL,
  client_message_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- A sender's retry of the same message finds it, also when the calls race.
CREATE UNIQUE INDEX messages_client_id ON messages (sender_id, client_message_id);
CREATE INDEX messages_conversation ON messages (conversation_id, position DESC);

-- Who blocked whom.
CREATE TABLE blocks (
  blocker_id uuid NOT NULL,
  blocked_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (blocker_id, blocked_id)
);

-- Each user's events (messages to or by them, read receipts) with a gapless sequence per
-- user, written in the transaction of the change: what Subscribe replays after a reconnect.
CREATE TABLE user_heads (
  user_id uuid PRIMARY KEY,
  seq bigint NOT NULL
);
CREATE TABLE user_events (
  user_id uuid NOT NULL,
  seq bigint NOT NULL,
  -- A SubscribeResponse, as sent.
  payload bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, seq)
);
CREATE INDEX user_events_age ON user_events (created_at);

-- Deleted accounts (the id only): nobody can message them, and late events change nothing.
CREATE TABLE deleted_users (
  user_id uuid PRIMARY KEY,
  deleted_at timestamptz NOT NULL DEFAULT now()
);
