import { type BaseConfig, envReader, readBaseConfig } from "@protomesh/platform";

/** chat's configuration. */
export interface ChatConfig extends BaseConfig {
  /** user's gRPC target: a first message to someone checks that they exist. */
  userAddr: string;
  /** How often an idle Subscribe stream gets a heartbeat (and checks for missed events). */
  heartbeatS: number;
  /** How long a replica's claim that a user is online lasts without refresh (a crash's cost). */
  presenceTtlS: number;
  /** How long Subscribe can replay a user's events after a disconnect. */
  eventRetentionDays: number;
}

/** Reads and validates chat's environment; throws naming every bad variable. */
export function readChatConfig(source: Record<string, string | undefined> = process.env): ChatConfig {
  const env = envReader(source);
  const config: ChatConfig = {
    ...readBaseConfig(env, "chat", 50057),
    userAddr: env.string("USER_ADDR", "dns:///127.0.0.1:50052"),
    heartbeatS: env.int("CHAT_HEARTBEAT_S", 15, 1, 300),
    presenceTtlS: env.int("CHAT_PRESENCE_TTL_S", 30, 2, 3_600),
    eventRetentionDays: env.int("CHAT_EVENT_RETENTION_DAYS", 30, 1, 3_650),
  };
  env.done();
  return config;
}
