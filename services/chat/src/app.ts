import { join } from "node:path";
import { ChatService } from "@protomesh/contracts/chat/v1/chat_pb";
import { MessageSentSchema, MessagesReadSchema } from "@protomesh/contracts/chat/v1/events_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";
import {
  bindService,
  createLiveFeed,
  createPageTokens,
  createServiceClient,
  defineStream,
  periodic,
  type ServiceModule,
  type ServiceSpec,
} from "@protomesh/platform";
import { createChatHandlers } from "./chat-service.ts";
import { type ChatConfig, readChatConfig } from "./config.ts";
import { createAccountDeletions } from "./consumers/account-deletions.ts";
import { encodeHead } from "./convert.ts";
import { createPgChatStore } from "./pg-chat-store.ts";
import { createPresence } from "./presence.ts";

const DAY_MS = 86_400_000;

/** The chat service, ready for startService. */
export function createChatService(config: ChatConfig): ServiceSpec {
  return {
    config,
    migrations: join(import.meta.dirname, "../migrations"),
    // Only notify consumes these, within moments: a week covers any outage. The live notices
    // (`chat.live.<user>`) are NATS core, outside any stream.
    streams: [defineStream({ name: "CHAT", subjects: ["chat.message.>"], maxAgeMs: 7 * DAY_MS })],
    emits: [MessageSentSchema, MessagesReadSchema],
    async build({ pool, log, mesh }) {
      const store = createPgChatStore(pool);
      const users = createServiceClient(UserService, config.userAddr, { mesh });
      const live = createLiveFeed({ subject: "chat.live" });
      const presence = createPresence({ bucket: "chat_presence", ttlMs: config.presenceTtlS * 1000, log });
      const pruning = periodic({
        what: "chat event pruning",
        intervalMs: 3_600_000,
        log,
        async task(signal) {
          while (!signal.aborted && (await store.pruneEvents(config.eventRetentionDays)) > 0);
        },
      });
      // Every heartbeat interval, one query for the heads of every user with a stream here: a
      // stream behind its head (a notice was lost) reads the log. A lost notice costs latency.
      const headCheck = periodic({
        what: "chat head check",
        intervalMs: config.heartbeatS * 1000,
        log,
        async task() {
          const users = [...live.keys()];
          if (users.length === 0) return;
          for (const { userId, seq } of await store.heads(users)) live.publishLocal(userId, encodeHead(seq));
        },
      });
      const handlers = createChatHandlers({
        store,
        users,
        live,
        presence,
        pageTokens: createPageTokens(config.meshSecret, "protomesh.chat.v1"),
        heartbeatMs: config.heartbeatS * 1000,
      });
      return {
        services: [bindService(ChatService, handlers)],
        consumers: [createAccountDeletions(store)],
        nats: [live, presence.nats],
        workers: [presence.worker, pruning, headCheck],
        close: async () => users.close(),
      };
    },
  };
}

/** chat as `npm start`, the tests and the benchmarks run it. */
export const chatModule: ServiceModule<ChatConfig> = {
  readConfig: readChatConfig,
  create: (config) => createChatService(config),
};
