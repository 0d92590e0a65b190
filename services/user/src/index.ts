export { readUserConfig, userService } from "./app.ts";
