-- Every query reaches its rows through a key (the account deletion included), and the list's
-- index runs in its ORDER BY's direction.

-- A conversation's sides, for the cascade when it is deleted and the orphan check on deletion.
CREATE INDEX participants_conversation ON participants (conversation_id);
-- One conversation per pair: at most one side of a user per peer (NULLs, deleted peers, repeat).
CREATE UNIQUE INDEX participants_peer ON participants (user_id, peer_id);
-- The blocks of a deleted account, from either end.
CREATE INDEX blocks_blocked ON blocks (blocked_id);
-- ListConversations: ORDER BY last_position DESC, conversation_id DESC, from a cursor.
DROP INDEX participants_recent;
CREATE INDEX participants_recent ON participants (user_id, last_position DESC, conversation_id DESC);

-- The message a log row carries (NULL for read receipts), so that an account's deletion also
-- removes its messages' text from its peers' logs, which Subscribe replays for days.
ALTER TABLE user_events ADD COLUMN message_id uuid;
CREATE INDEX user_events_message ON user_events (message_id) WHERE message_id IS NOT NULL;
