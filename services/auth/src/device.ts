import Bowser from "bowser";

/** A short name for a session's device from its User-Agent: "Firefox on Linux", "unknown device". */
export function deviceName(userAgent: string): string {
  if (!userAgent) return "unknown device";
  const { browser, os } = Bowser.parse(userAgent);
  const b = browser.name?.trim();
  const o = os.name?.trim();
  const name = b && o ? `${b} on ${o}` : (b ?? o ?? "unknown device");
  // Only what ListSessions and an alert email show, never the raw header: short and printable.
  return name.replace(/[^\p{L}\p{N} ._()/-]/gu, "").slice(0, 64) || "unknown device";
}
