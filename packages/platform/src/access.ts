import { type DescMethod, getOption } from "@bufbuild/protobuf";
import { Access, access } from "@protomesh/contracts/options/v1/options_pb";

export { Access };

/** The access level a method declares in its contract; unset means INTERNAL (deny by default). */
export function accessOf(method: DescMethod): Access {
  const level = getOption(method, access);
  return level === Access.UNSPECIFIED ? Access.INTERNAL : level;
}

/** The role that ADMIN methods require. */
export const ADMIN_ROLE = "admin";
