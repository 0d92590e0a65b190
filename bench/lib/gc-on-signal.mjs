// Loaded into the bench's service processes (NODE_OPTIONS=--import …): SIGUSR2 runs a full
// garbage collection, so the bench reads a heap of live objects, not of garbage not yet collected.
// Plain JavaScript: NODE_OPTIONS imports load before tsx does.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc");
process.on("SIGUSR2", () => gc());
