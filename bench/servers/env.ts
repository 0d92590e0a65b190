// What every bench server reads from its environment.

/** PORT as a port number (0, the default, picks a free one); exits with a message otherwise. */
export function portFromEnv(server: string): number {
  const port = Number(process.env.PORT ?? "0");
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`${server}: PORT must be an integer 0-65535, got "${process.env.PORT}"\n`);
    process.exit(1);
  }
  return port;
}
