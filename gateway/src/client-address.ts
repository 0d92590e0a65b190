// Whose request is this? The socket's peer, unless that peer is a proxy we were told to trust,
// in which case X-Forwarded-For says who it forwarded for. A client's own X-Forwarded-For is
// otherwise ignored: anyone can write one, and per-address rate limits and auth's throttling
// would be worthless if a header could choose the address they count.
import { BlockList, isIP } from "node:net";

/** Finds the client's address of a request (see README: client address). */
export type ClientAddress = (socketAddress: string | undefined, forwardedFor: string | undefined) => string;

/** An address as compared and forwarded: IPv4 plain (not ::ffff:-mapped), IPv6 lower case. */
export function normalizeAddress(address: string): string {
  const plain = address.trim().toLowerCase();
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/.test(plain) ? plain.slice(7) : plain;
}

/** An X-Forwarded-For entry as an address: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`. */
function entryAddress(entry: string): string | undefined {
  const e = entry.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(e);
  const v4WithPort = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(e);
  const address = normalizeAddress(bracketed?.[1] ?? v4WithPort?.[1] ?? e);
  return isIP(address) ? address : undefined;
}

/**
 * Parses TRUSTED_PROXIES entries (addresses or CIDR ranges, IPv4 or IPv6); returns the problems
 * found, one per bad entry.
 */
export function parseTrustedProxies(entries: readonly string[]): { list: BlockList; problems: string[] } {
  const list = new BlockList();
  const problems: string[] = [];
  for (const entry of entries) {
    const [address = "", prefix, ...rest] = entry.split("/");
    const plain = normalizeAddress(address);
    const family = isIP(plain);
    const bits = prefix === undefined ? undefined : Number(prefix);
    const maxBits = family === 6 ? 128 : 32;
    if (
      family === 0 ||
      rest.length > 0 ||
      (bits !== undefined && !(/^\d{1,3}$/.test(prefix ?? "") && bits <= maxBits))
    ) {
      problems.push(`TRUSTED_PROXIES: "${entry}" is not an IP address or CIDR range`);
      continue;
    }
    const type = family === 6 ? "ipv6" : "ipv4";
    if (bits === undefined) list.addAddress(plain, type);
    else list.addSubnet(plain, bits, type);
  }
  return { list, problems };
}

/**
 * The client's address: the socket's, unless the socket's peer is a trusted proxy; then the
 * right-most X-Forwarded-For entry that is not itself a trusted proxy (entries to its left were
 * written by whoever the proxy talked to, and may be forged). When every entry is a trusted
 * proxy, the left-most; when an entry is not an address, the last trusted hop before it.
 */
export function createClientAddress(trusted: readonly string[]): ClientAddress {
  const { list, problems } = parseTrustedProxies(trusted);
  if (problems.length > 0) throw new Error(problems.join("; "));
  const isTrusted = (address: string) => {
    const family = isIP(address);
    return family !== 0 && list.check(address, family === 6 ? "ipv6" : "ipv4");
  };
  return (socketAddress, forwardedFor) => {
    let address = normalizeAddress(socketAddress ?? "");
    if (trusted.length === 0 || !forwardedFor) return address;
    const hops = forwardedFor.split(",");
    for (let i = hops.length - 1; i >= 0 && isTrusted(address); i--) {
      const hop = entryAddress(hops[i] ?? "");
      if (!hop) break;
      address = hop;
    }
    return address;
  };
}
