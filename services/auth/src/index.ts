export { authModule, createAuthService } from "./app.ts";
export { type AuthConfig, readAuthConfig } from "./config.ts";
