export { createOtpService, otpModule } from "./app.ts";
export { type OtpConfig, readOtpConfig } from "./config.ts";
