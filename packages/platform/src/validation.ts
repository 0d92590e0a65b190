import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator } from "@bufbuild/protovalidate";
import { Code, ConnectError } from "./errors.ts";

const validator = createValidator();

/** Checks a request against its protovalidate rules; INVALID_ARGUMENT names each bad field. */
export function validateRequest<D extends DescMessage>(schema: D, message: MessageShape<D>): void {
  const result = validator.validate(schema, message);
  if (result.kind === "valid") return;
  if (result.kind === "invalid") {
    const text = result.violations
      .map((v) => {
        const field = pathToString(v.field);
        return field ? `${field}: ${v.message}` : v.message;
      })
      .join("; ");
    throw new ConnectError(text, Code.InvalidArgument);
  }
  // A rule that fails to compile is our bug, not the caller's.
  throw result.error;
}
