-- The live code of each subject and purpose (at most one): only its keyed hash is stored. A
-- used code is deleted; a dead one (too many wrong tries) stays, so Verify can say LOCKED,
-- until it expires and the cleanup deletes it.
CREATE TABLE otp_codes (
  subject text NOT NULL,
  purpose smallint NOT NULL,
  id uuid NOT NULL,
  code_hash bytea NOT NULL,
  attempts int NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (subject, purpose)
);
CREATE INDEX otp_codes_expires_at ON otp_codes (expires_at);

-- When codes were issued: the resend cooldown and the hourly cap count these.
CREATE TABLE otp_issues (
  subject text NOT NULL,
  purpose smallint NOT NULL,
  issued_at timestamptz NOT NULL
);
CREATE INDEX otp_issues_key ON otp_issues (subject, purpose, issued_at);
CREATE INDEX otp_issues_issued_at ON otp_issues (issued_at);

-- Wrong tries, kept across codes: a new code does not reset the budget of a subject and purpose.
CREATE TABLE otp_failures (
  subject text NOT NULL,
  purpose smallint NOT NULL,
  failed_at timestamptz NOT NULL
);
CREATE INDEX otp_failures_key ON otp_failures (subject, purpose, failed_at);
CREATE INDEX otp_failures_failed_at ON otp_failures (failed_at);
