-- Email verification, and how often SignUp told an owner that someone tried their email.
ALTER TABLE credentials
  ADD COLUMN email_verified_at timestamptz,
  ADD COLUMN signup_attempted_at timestamptz;

-- The device ("Firefox on Linux") a session signed in from, for ListSessions and new-device alerts.
ALTER TABLE sessions ADD COLUMN device text NOT NULL DEFAULT '';
CREATE INDEX sessions_user_active ON sessions (user_id, last_used_at DESC) WHERE revoked_at IS NULL;

-- A used refresh token keeps its successor (sealed with AUTH_KEY_ENCRYPTION_KEY) for the grace
-- window, so a retried refresh gets the same successor instead of revoking the session.
ALTER TABLE refresh_tokens ADD COLUMN successor_enc bytea;
CREATE INDEX refresh_tokens_successor ON refresh_tokens (used_at) WHERE successor_enc IS NOT NULL;

-- Consecutive failed sign-ins per key ('account:<email>' or 'ip:<address>'), shared by every
-- replica. An attempt counts before the password is checked and is taken back on success.
CREATE TABLE sign_in_failures (
  key text PRIMARY KEY,
  failures integer NOT NULL,
  last_failure_at timestamptz NOT NULL
);
