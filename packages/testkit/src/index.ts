export { signUpAndSignIn, TEST_PASSWORD, type TestAccount } from "./accounts.ts";
export { gatewayClient, type Protocol, uniqueEmail } from "./clients.ts";
export { publishEvent, query } from "./events.ts";
export { SHARED_PG_ENV, testDatabases } from "./infra.ts";
export { rememberSecrets, TEST_LOG_DIR_ENV, testLogger } from "./logs.ts";
export { codeAfter, codeIn, MAIL, mailsTo, mailTo } from "./mail.ts";
export { type Mesh, type MeshOptions, type ServiceName, startMesh } from "./mesh.ts";
export { accessTokenSigner } from "./tokens.ts";
export { assertCode, failure, nextWhere, waitUntil, within } from "./wait.ts";
