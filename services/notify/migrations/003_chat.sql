-- Chat emails: how far each person read each conversation (from MessagesRead), so a message
-- already read sends no email, and when each was last emailed about it (the quiet period).
CREATE TABLE chat_reads (
  user_id uuid NOT NULL,
  conversation_id uuid NOT NULL,
  position bigint NOT NULL,
  PRIMARY KEY (user_id, conversation_id)
);
CREATE TABLE chat_emails (
  user_id uuid NOT NULL,
  conversation_id uuid NOT NULL,
  sent_at timestamptz NOT NULL,
  PRIMARY KEY (user_id, conversation_id)
);
