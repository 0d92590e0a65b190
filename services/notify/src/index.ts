export { createNotifyService, notifyModule } from "./app.ts";
export { type NotifyConfig, readNotifyConfig } from "./config.ts";
