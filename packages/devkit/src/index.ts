export { type Nats, type StartNatsOptions, startNats } from "./nats.ts";
export { freePort, freePortRange } from "./ports.ts";
export { createDatabase, type Postgres, type StartPostgresOptions, startPostgres } from "./postgres.ts";
export {
  createReflectionClient,
  type ReflectionClient,
  type ReflectionClientOptions,
  ReflectionError,
  type ReflectionVersion,
} from "./reflection-client.ts";
export { type ReceivedSms, type SmsPeer, startSmsPeer } from "./sms-peer.ts";
export { type ReceivedMail, type Smtp, startSmtp } from "./smtp.ts";
export { ensureCommand, hasCommand } from "./tools.ts";
