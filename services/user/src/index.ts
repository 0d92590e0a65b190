export { createUserService, userModule } from "./app.ts";
export { readUserConfig } from "./config.ts";
