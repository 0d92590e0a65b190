import { readServiceConfig } from "@protomesh/platform";

/** Reads and validates user's environment (only the shared settings); throws naming every bad variable. */
export const readUserConfig = readServiceConfig("user", 50052);
