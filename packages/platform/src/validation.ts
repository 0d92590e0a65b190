import { type DescMessage, type MessageShape, ScalarType } from "@bufbuild/protobuf";
import { type Path, pathToString, type ReflectMessage, reflect } from "@bufbuild/protobuf/reflect";
import { createValidator } from "@bufbuild/protovalidate";
import { Code, ConnectError } from "./errors.ts";

const validator = createValidator();

/**
 * Checks a request before any handler sees it: strings every store can hold, then its
 * protovalidate rules. INVALID_ARGUMENT names each bad field.
 */
export function validateRequest<D extends DescMessage>(schema: D, message: MessageShape<D>): void {
  const nul = fieldsWithNul(reflect(schema, message));
  if (nul.length > 0) {
    throw new ConnectError(
      nul.map((path) => `${pathToString(path)}: must not contain NUL characters`).join("; "),
      Code.InvalidArgument,
    );
  }
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

const hasNul = (value: unknown) => typeof value === "string" && value.includes("\0");

/**
 * The paths of every string holding a NUL, however deep (nested messages, lists, map keys and
 * values, oneofs). PostgreSQL text cannot store U+0000, so such a string would fail at the
 * store as an internal error (or a retry forever) instead of as the caller's mistake. Lone
 * surrogates cannot arrive: binary decoding of proto3 strings rejects invalid UTF-8.
 */
function fieldsWithNul(msg: ReflectMessage, at: Path = [], found: Path[] = []): Path[] {
  for (const field of msg.fields) {
    if (!msg.isSet(field)) continue;
    const here: Path = [...at, field];
    switch (field.fieldKind) {
      case "scalar":
        if (field.scalar === ScalarType.STRING && hasNul(msg.get(field))) found.push(here);
        break;
      case "message":
        fieldsWithNul(msg.get(field), here, found);
        break;
      case "list": {
        let index = 0;
        for (const item of msg.get(field)) {
          const path: Path = [...here, { kind: "list_sub", index }];
          if (field.listKind === "message") fieldsWithNul(item as ReflectMessage, path, found);
          else if (hasNul(item)) found.push(path);
          index++;
        }
        break;
      }
      case "map":
        for (const [key, value] of msg.get(field)) {
          // A bad key is named by its map alone: the path would carry the NUL into the message.
          if (hasNul(key)) {
            found.push(here);
            continue;
          }
          const path: Path = [...here, { kind: "map_sub", key: key as string | number | bigint | boolean }];
          if (field.mapKind === "message") fieldsWithNul(value as ReflectMessage, path, found);
          else if (hasNul(value)) found.push(path);
        }
        break;
    }
  }
  return found;
}
