-- Second factors. A row with enabled_at NULL is an enrolment started but not confirmed; it
-- changes nothing until ConfirmMfa. Everything cascades with the account (DeleteAccount).
CREATE TABLE mfa_factors (
  user_id uuid NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
  method text NOT NULL CHECK (method IN ('email', 'totp')),
  -- TOTP only: the base32 secret sealed with AUTH_KEY_ENCRYPTION_KEY (AES-256-GCM).
  secret_enc bytea,
  -- TOTP only: the last time step a code was accepted for; a code works once, and never an
  -- older one after a newer (replay protection).
  last_step bigint,
  created_at timestamptz NOT NULL DEFAULT now(),
  enabled_at timestamptz,
  PRIMARY KEY (user_id, method)
);

-- One-time recovery codes, stored as SHA-256 hashes: they are random (60 bits), so a fast hash
-- is as good as bcrypt here and lets a code be found by its hash.
CREATE TABLE mfa_recovery_codes (
  user_id uuid NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
  code_hash bytea NOT NULL,
  used_at timestamptz,
  PRIMARY KEY (user_id, code_hash)
);

-- Half a sign-in: the password was right, the second factor is owed. The token is stored as a
-- SHA-256 hash; `attempts` counts codes tried (bounded before a code is checked, so parallel
-- guesses cannot exceed it).
CREATE TABLE mfa_challenges (
  token_hash bytea PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES credentials (user_id) ON DELETE CASCADE,
  expires_at timestamptz NOT NULL,
  attempts int NOT NULL DEFAULT 0
);
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_expiry ON mfa_challenges (expires_at);

-- Wrong second-factor codes per user across challenges: a new challenge (the password is known)
-- must not reset the budget, or 5 tries × unlimited challenges would make 6 digits guessable.
CREATE TABLE mfa_failures (
  user_id uuid PRIMARY KEY REFERENCES credentials (user_id) ON DELETE CASCADE,
  failures int NOT NULL,
  window_start timestamptz NOT NULL
);
