import { type DescMethod, getOption } from "@bufbuild/protobuf";
import { Access, access } from "@protomesh/contracts/options/v1/options_pb";
import type { UserIdentity } from "./caller.ts";
import { Code, ConnectError } from "./errors.ts";

export { Access };

/** The access level a method declares in its contract; unset means INTERNAL (deny by default). */
export function accessOf(method: DescMethod): Access {
  const level = getOption(method, access);
  return level === Access.UNSPECIFIED ? Access.INTERNAL : level;
}

/** The role that ADMIN methods require. */
export const ADMIN_ROLE = "admin";

/**
 * The one rule for who may call a method, applied by the gateway and by every service:
 * PUBLIC is open; USER needs a verified user (or a mesh service); ADMIN needs the admin role
 * (or a mesh service); INTERNAL needs a mesh service. The gateway never holds mesh credentials.
 */
export function checkAccess(
  level: Access,
  caller: { user?: UserIdentity | undefined; service?: string | undefined },
) {
  if (level === Access.PUBLIC || caller.service) return;
  if (level === Access.INTERNAL)
    throw new ConnectError("this method is internal to the mesh", Code.PermissionDenied);
  if (!caller.user) throw new ConnectError("missing access token", Code.Unauthenticated);
  if (level === Access.ADMIN && !caller.user.roles.includes(ADMIN_ROLE)) {
    throw new ConnectError("this method needs the admin role", Code.PermissionDenied);
  }
}

/** The token of an `authorization: Bearer …` header; UNAUTHENTICATED for any other scheme. */
export function bearerToken(header: string | undefined | null): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (!m?.[1]) throw new ConnectError("authorization must be a Bearer token", Code.Unauthenticated);
  return m[1];
}
