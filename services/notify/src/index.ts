export { type NotifyConfig, notifyService, readNotifyConfig } from "./app.ts";
