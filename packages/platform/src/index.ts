// The platform's public API: what services, the gateway and tools use. Everything else in
// this package is internal and may change without notice.
export { Access, ADMIN_ROLE, accessOf, bearerToken, checkAccess } from "./access.ts";
export {
  ACCESS_TOKEN_ALG,
  ACCESS_TOKEN_TYPE,
  type AccessTokenVerifier,
  createAccessTokenVerifier,
  createMeshCredentials,
  createRevocationList,
  MAX_ACCESS_TOKEN_TTL_MS,
  type RevocationList,
  type UserIdentity,
} from "./caller.ts";
export { type CallOptions, createServiceClient, type ServiceClient } from "./client.ts";
export {
  type BaseConfig,
  type CommonConfig,
  ConfigError,
  type EnvReader,
  envReader,
  readBaseConfig,
  readCommonConfig,
  readServiceConfig,
} from "./config.ts";
export {
  type CallContext,
  REQUEST_ID_HEADER,
  requestIdOf,
  requireUser,
  requireVerifiedEmail,
} from "./context.ts";
export { createPool, type Pool, type Tx, withTransaction } from "./db.ts";
export { type DeadLetter, listDeadLetters, replayDeadLetter } from "./dead-letters.ts";
export { Code, ConnectError, fail, retryDelayMs, retryLater, unlessNotFound } from "./errors.ts";
export {
  addEvent,
  type ConsumerSpec,
  consumer,
  DEAD_LETTER_HEADERS,
  EVENT_ID_HEADER,
  EVENT_TYPE_HEADER,
  type EventMeta,
  type SubscriptionSpec,
  subjectOf,
  subscription,
} from "./events.ts";
export {
  createGatewayCredentials,
  createGatewayVerifier,
  GATEWAY_TOKEN_HEADER,
  GATEWAY_TOKEN_TTL_S,
} from "./gateway-credentials.ts";
export { createHealthClient, HEALTH } from "./health.ts";
export { createHub, type Hub } from "./hub.ts";
export { createLiveFeed, type LiveFeed, type NatsPart } from "./live.ts";
export { createLogger, type Logger } from "./logger.ts";
export { metrics, statusName } from "./metrics.ts";
export {
  connectNats,
  deadLetterStream,
  deadLetterSubject,
  defineStream,
  type NatsConnection,
  type StreamSpec,
} from "./nats.ts";
export { type Cursor, createPageTokens, type Page, type PageTokens, toPage } from "./page-tokens.ts";
export { periodic } from "./periodic.ts";
export { bindService, type ServiceHandlers, sharedResponse, USER_AGENT_HEADER } from "./server.ts";
export {
  createJwksSource,
  followRevocations,
  type RunningService,
  runMain,
  type ServiceDeps,
  type ServiceModule,
  type ServiceParts,
  type ServiceSpec,
  startService,
  type Worker,
} from "./service.ts";
