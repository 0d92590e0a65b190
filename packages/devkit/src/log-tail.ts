/** The last lines a child process wrote, kept so a failed start can say why without flooding logs. */
export class LogTail {
  readonly #lines: string[] = [];
  readonly #limit: number;
  #partial = "";

  constructor(limit = 50) {
    this.#limit = limit;
  }

  /** Appends a chunk that may hold several lines or end mid-line. */
  push(chunk: string): string[] {
    const parts = (this.#partial + chunk).split(/\r?\n/);
    this.#partial = parts.pop() ?? "";
    for (const line of parts) {
      this.#lines.push(line);
      if (this.#lines.length > this.#limit) this.#lines.shift();
    }
    return parts;
  }

  /** The kept lines as one indented block for an error message. */
  toString(): string {
    const lines = this.#partial ? [...this.#lines, this.#partial] : this.#lines;
    return lines.length === 0 ? "  (no output)" : lines.map((line) => `  ${line}`).join("\n");
  }
}
