// The reflection client lives in the devkit (scripts/grpc.ts uses it too); this keeps the
// signature the journey tests were written against.
import { createReflectionClient, type ReflectionClient, type ReflectionVersion } from "@protomesh/devkit";

/** A reflection client for address speaking the given reflection version. */
export function reflectionClient(address: string, version: ReflectionVersion = "v1"): ReflectionClient {
  return createReflectionClient(address, { version });
}
