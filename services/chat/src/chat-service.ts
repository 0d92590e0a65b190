import { setTimeout as delay } from "node:timers/promises";
import { fromBinary } from "@bufbuild/protobuf";
import {
  type ChatService,
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "@protomesh/contracts/chat/v1/chat_pb";
import type { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  Code,
  ConnectError,
  fail,
  type LiveFeed,
  type PageTokens,
  requireUser,
  type ServiceClient,
  type ServiceHandlers,
  unlessNotFound,
} from "@protomesh/platform";
import { toConversation, toMessage } from "./convert.ts";
import type { ChatStore, UserEvent } from "./pg-chat-store.ts";
import type { Presence } from "./presence.ts";

/** Events read from the log per query while a stream catches up. */
const REPLAY_BATCH = 500;

const conversationNotFound = () => fail(Code.NotFound, "conversation not found");

/** ChatService handlers. */
export function createChatHandlers(deps: {
  store: ChatStore;
  users: Pick<ServiceClient<typeof UserService>, "getUser">;
  live: LiveFeed;
  presence: Presence;
  pageTokens: PageTokens;
  heartbeatMs: number;
}): ServiceHandlers<typeof ChatService> {
  const { store, users, live, presence, pageTokens } = deps;

  /** Hands committed events to the streams open for their users, on every replica. */
  const announce = (events: UserEvent[]) => {
    for (const e of events) live.publish(e.userId, e.payload);
  };

  /** The caller's side of a conversation, or NOT_FOUND. */
  const sideOf = async (userId: string, conversationId: string) => {
    const side = await store.participant(userId, conversationId);
    if (!side) throw conversationNotFound();
    return side;
  };

  /** NOT_FOUND unless user knows the account (asked on a first message only). */
  const mustExist = async (userId: string) => {
    if (!(await unlessNotFound(users.getUser({ userId }))))
      throw fail(Code.NotFound, "recipient_id: no such user");
  };

  return {
    async sendMessage(req, ctx) {
      const me = requireUser(ctx).userId;
      let peerId: string;
      let conversationId: string | undefined;
      if (req.to.case === "conversationId") {
        const side = await sideOf(me, req.to.value);
        if (!side.peerId) throw fail(Code.NotFound, "the other person deleted their account");
        peerId = side.peerId;
        conversationId = req.to.value;
      } else {
        peerId = req.to.value ?? "";
        if (peerId === me) throw fail(Code.InvalidArgument, "recipient_id: you cannot message yourself");
        conversationId = await store.conversationWith(me, peerId);
        if (!conversationId) {
          if (await store.isDeleted(peerId)) throw fail(Code.NotFound, "recipient_id: no such user");
          await mustExist(peerId);
        }
      }
      const sent = await store.send({
        senderId: me,
        recipientId: peerId,
        conversationId,
        text: req.text,
        clientMessageId: req.clientMessageId,
        recipientOnline: (await presence.online([peerId])).has(peerId),
      });
      switch (sent.kind) {
        case "deleted":
          throw fail(Code.NotFound, "no such user");
        case "blocked":
          throw sent.byPeer
            ? fail(Code.PermissionDenied, "this person does not accept your messages")
            : fail(Code.FailedPrecondition, "you blocked this person; unblock them to write");
        case "reused":
          throw fail(Code.InvalidArgument, "client_message_id: already used for another message");
        case "repeat":
          return { message: toMessage(sent.message) };
        case "sent":
          announce(sent.events);
          return { message: toMessage(sent.message) };
      }
    },

    async listConversations(req, ctx) {
      const me = requireUser(ctx).userId;
      // Bound to its user: nobody pages through another's list with it.
      const scope = `conversations\0${me}`;
      const page = await store.listConversations(
        me,
        req.pageSize || 20,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      return {
        conversations: page.items.map(toConversation),
        nextPageToken: pageTokens.tokenFor(scope, page.next),
      };
    },

    async listMessages(req, ctx) {
      const me = requireUser(ctx).userId;
      await sideOf(me, req.conversationId);
      // Bound to the conversation and user: a token from another conversation is refused.
      const scope = `messages\0${me}\0${req.conversationId}`;
      const page = await store.listMessages(
        req.conversationId,
        req.pageSize || 50,
        pageTokens.cursorOf(scope, req.pageToken),
      );
      return { messages: page.items.map(toMessage), nextPageToken: pageTokens.tokenFor(scope, page.next) };
    },

    async markRead(req, ctx) {
      const me = requireUser(ctx).userId;
      await sideOf(me, req.conversationId);
      const read = await store.markRead(me, req.conversationId, req.messageId);
      if (read.kind === "no message") throw fail(Code.NotFound, "message_id: not in this conversation");
      announce(read.events);
      return {};
    },

    async blockUser(req, ctx) {
      const me = requireUser(ctx).userId;
      if (req.userId === me) throw fail(Code.InvalidArgument, "user_id: you cannot block yourself");
      await store.block(me, req.userId);
      return {};
    },

    async unblockUser(req, ctx) {
      await store.unblock(requireUser(ctx).userId, req.userId);
      return {};
    },

    async getPresence(req, ctx) {
      const me = requireUser(ctx).userId;
      // Only the caller's contacts who have not blocked them: presence is not for strangers.
      const contacts = await store.contacts(me, req.userIds);
      const online = await presence.online(contacts);
      return { presences: req.userIds.map((userId) => ({ userId, online: online.has(userId) })) };
    },

    async *subscribe(req, ctx) {
      const me = requireUser(ctx).userId;
      // Ends the listener however the stream ends (a refusal below, not only a cancel).
      const ended = new AbortController();
      const signal = AbortSignal.any([ctx.signal, ended.signal]);
      // Listening starts before the log is read, so an event committed in between comes live.
      const notices = await live.listen(me, signal);
      await presence.enter(me);
      try {
        const { head, oldest } = await store.history(me);
        let last = head;
        if (req.afterSeq !== undefined) {
          if (req.afterSeq > head)
            throw fail(Code.OutOfRange, "after_seq: beyond the newest event; subscribe without it");
          if (req.afterSeq + 1n < oldest)
            throw fail(
              Code.OutOfRange,
              "after_seq: older than the kept history; reload and subscribe without it",
            );
          last = req.afterSeq;
        }
        /** Reads the log after `last` (up to `upTo`, or to its end), in order. */
        async function* catchUp(upTo?: bigint): AsyncGenerator<SubscribeResponse> {
          for (;;) {
            const batch = await store.eventsAfter(me, last, REPLAY_BATCH);
            for (const e of batch) {
              if (upTo !== undefined && e.seq > upTo) return;
              last = e.seq;
              yield fromBinary(SubscribeResponseSchema, e.payload);
            }
            if (batch.length < REPLAY_BATCH) return;
          }
        }
        const heartbeat = () => ({ seq: last, event: { case: "heartbeat" as const, value: {} } });
        yield* catchUp();
        yield heartbeat();
        // Held across yields while the client reads: a rejection (it fell too far behind) is
        // met by the race below, and must not count as unhandled meanwhile.
        const pull = () => {
          const pending = notices.next();
          pending.catch(() => {});
          return pending;
        };
        let next = pull();
        let tick = delay(deps.heartbeatMs, "tick" as const, { signal }).catch(() => "stop" as const);
        for (;;) {
          const got = await Promise.race([next, tick]);
          if (got === "stop") return;
          if (got === "tick") {
            yield heartbeat();
            tick = delay(deps.heartbeatMs, "tick" as const, { signal }).catch(() => "stop" as const);
            continue;
          }
          if (got.done) return;
          next = pull();
          const event = fromBinary(SubscribeResponseSchema, got.value);
          if (event.seq <= last) continue;
          // The replica's periodic look at the heads: events whose notice never came.
          if (event.event.case === "heartbeat") {
            yield* catchUp(event.seq);
          } else if (event.seq === last + 1n) {
            last = event.seq;
            yield event;
          } else {
            // Notices from two replicas can cross, or one was lost: the log fills the gap.
            yield* catchUp(event.seq);
          }
        }
      } finally {
        ended.abort();
        const reason: unknown = ctx.signal.reason;
        presence.leave(me, reason instanceof ConnectError && reason.code === Code.Unavailable);
      }
    },
  };
}
