import { Code, fail, type Pool, type Tx, withTransaction } from "@protomesh/platform";
import { stockLowIfCrossed } from "./stock-low.ts";

/** Units of one product asked for by an order. */
export interface StockLine {
  productId: string;
  quantity: number;
}

/** A reserved line with the product's name and price when it was reserved. */
export interface ReservedLine extends StockLine {
  name: string;
  priceMinor: bigint;
  currency: string;
}

export interface Reservation {
  /** In the order of the request that made it. */
  lines: ReservedLine[];
  expireTime: Date;
}

/** What ReserveStock found or did; failures that change nothing are thrown instead. */
export type ReserveOutcome =
  | { kind: "reserved"; reservation: Reservation; replay: boolean }
  | { kind: "released" }
  | { kind: "expired" };

export type ReleaseOutcome = "released" | "already-released" | "recorded";
export type CommitOutcome = "committed" | "not-found" | "released" | "expired";

type State = "reserved" | "committed" | "released" | "expired";

interface ReservationRow {
  state: State;
  expire_time: Date;
  due: boolean;
}

interface LineRow {
  product_id: string;
  quantity: number;
  name: string;
  price_minor: string;
  currency: string;
}

// One round trip per line, and the last statements before COMMIT: the product's row lock is
// held from this UPDATE to the COMMIT, so nothing else runs in between. The conditional UPDATE
// is the whole check: no read of the stock in JS, so no oversell under any concurrency.
const RESERVE_LINE = `
  WITH p AS (
    UPDATE products SET stock = stock - $2 WHERE id = $1 AND stock >= $2 AND NOT deleted
    RETURNING id, name, price_minor, currency, stock, low_stock_threshold
  ), l AS (
    INSERT INTO reservation_lines (order_id, line_no, product_id, quantity, name, price_minor, currency)
    SELECT $3, $4, id, $2, name, price_minor, currency FROM p
  ), m AS (
    INSERT INTO stock_movements (product_id, delta, stock_after, kind, order_id)
    SELECT id, -$2, stock, 'reservation', $3 FROM p
  )
  SELECT * FROM p`;

// The usual order, one line, as one statement and so one round trip and its own transaction:
// the same conditional decrement, reservation row, line and ledger movement as the transaction
// below, all or nothing. It takes nothing in the cases that need more than that statement, and
// the caller then runs the full transaction: a decrement that would cross the low-stock
// threshold (StockLow goes in the outbox in the same transaction), a short or unknown product
// (the error names which), and an order id already seen (the reservation insert violates the
// key, which aborts the whole statement, decrement included: then it is a replay or refused).
const RESERVE_ONE = `
  WITH p AS (
    UPDATE products SET stock = stock - $2
    WHERE id = $1 AND stock >= $2 AND NOT deleted
      AND NOT (low_stock_threshold > 0 AND stock > low_stock_threshold AND stock - $2 <= low_stock_threshold)
    RETURNING id, name, price_minor, currency, stock
  ), r AS (
    INSERT INTO reservations (order_id, state, expire_time)
    SELECT $3, 'reserved', now() + make_interval(secs => $4) FROM p
    RETURNING expire_time
  ), l AS (
    INSERT INTO reservation_lines (order_id, line_no, product_id, quantity, name, price_minor, currency)
    SELECT $3, 0, id, $2, name, price_minor, currency FROM p
  ), m AS (
    INSERT INTO stock_movements (product_id, delta, stock_after, kind, order_id)
    SELECT id, -$2, stock, 'reservation', $3 FROM p
  )
  SELECT p.name, p.price_minor, p.currency, r.expire_time FROM p, r`;

// A reservation that is still reserved and not due, committed in one statement; every other
// case (none, released, expired, due) takes the locked read below.
const COMMIT_RESERVED = `UPDATE reservations SET state = 'committed', updated_at = now()
  WHERE order_id = $1 AND state = 'reserved' AND expire_time > now()`;

// Named, so each connection parses and plans these once (they run for every order).
// unique_violation: the order id reserved (or was released) before. deadlock_detected: only a
// concurrent call of the same order id with other lines locks in the other order (reservation
// row first); PostgreSQL aborts one of the two, and the full transaction answers properly.
const RETRY_IN_FULL = new Set(["23505", "40P01"]);

const RETURN_LINE = `
  WITH p AS (UPDATE products SET stock = stock + $2 WHERE id = $1 RETURNING id, stock)
  INSERT INTO stock_movements (product_id, delta, stock_after, kind, order_id)
  SELECT id, $2, stock, $3, $4 FROM p`;

const byProduct = (a: { productId: string }, b: { productId: string }) =>
  a.productId < b.productId ? -1 : a.productId > b.productId ? 1 : 0;

const sameLines = (a: StockLine[], b: StockLine[]) => {
  const key = (lines: StockLine[]) =>
    [...lines]
      .sort(byProduct)
      .map((l) => `${l.productId}:${l.quantity}`)
      .join(",");
  return a.length === b.length && key(a) === key(b);
};

async function lockReservation(tx: Tx, orderId: string): Promise<ReservationRow | undefined> {
  const { rows } = await tx.query<ReservationRow>(
    "SELECT state, expire_time, expire_time <= now() AS due FROM reservations WHERE order_id = $1 FOR UPDATE",
    [orderId],
  );
  return rows[0];
}

async function storedLines(tx: Tx, orderId: string): Promise<ReservedLine[]> {
  const { rows } = await tx.query<LineRow>(
    `SELECT product_id, quantity, name, price_minor, currency FROM reservation_lines
      WHERE order_id = $1 ORDER BY line_no`,
    [orderId],
  );
  return rows.map((r) => ({
    productId: r.product_id,
    quantity: r.quantity,
    name: r.name,
    priceMinor: BigInt(r.price_minor),
    currency: r.currency,
  }));
}

/**
 * Puts an order's reserved units back into stock, line by line in product-id order (the order
 * every stock transaction locks products in, so none waits on another in a cycle), records each
 * in the ledger and moves the reservation to `state`. The caller holds the reservation's lock.
 */
async function returnUnits(tx: Tx, orderId: string, state: "released" | "expired"): Promise<void> {
  const kind = state === "released" ? "release" : "expiry";
  for (const line of (await storedLines(tx, orderId)).sort(byProduct)) {
    await tx.query(RETURN_LINE, [line.productId, line.quantity, kind, orderId]);
  }
  await tx.query("UPDATE reservations SET state = $2, updated_at = now() WHERE order_id = $1", [
    orderId,
    state,
  ]);
}

/** Why a line could not be reserved: NOT_FOUND for an unknown or deleted product, else short stock. */
async function whyNot(tx: Tx, line: StockLine) {
  const { rows } = await tx.query<{ name: string; stock: number; deleted: boolean }>(
    "SELECT name, stock, deleted FROM products WHERE id = $1",
    [line.productId],
  );
  const p = rows[0];
  if (!p || p.deleted) return fail(Code.NotFound, `product ${line.productId} not found`);
  return fail(
    Code.FailedPrecondition,
    `not enough stock for product ${line.productId} (${p.name}): ${p.stock} left, ${line.quantity} asked; nothing was reserved`,
  );
}

/** Reservations of stock for orders, in PostgreSQL. */
export function createPgReservationStore(pool: Pool) {
  return {
    /**
     * Takes every line out of stock for the order, all or nothing, in one transaction; or
     * returns the order's existing reservation when the same lines come again. The reservation
     * row is inserted first: a concurrent call with the same order id waits on it and then sees
     * the committed reservation (or, if that one failed, tries itself).
     */
    async reserve(orderId: string, lines: StockLine[], ttlS: number): Promise<ReserveOutcome> {
      const [only] = lines;
      if (only && lines.length === 1) {
        const fast = await reserveOne(orderId, only, ttlS);
        if (fast) return fast;
      }
      return withTransaction(pool, async (tx): Promise<ReserveOutcome> => {
        const inserted = await tx.query<{ expire_time: Date }>(
          `INSERT INTO reservations (order_id, state, expire_time)
           VALUES ($1, 'reserved', now() + make_interval(secs => $2)) ON CONFLICT DO NOTHING
           RETURNING expire_time`,
          [orderId, ttlS],
        );
        const expireTime = inserted.rows[0]?.expire_time;
        if (!expireTime) return existing(tx, orderId, lines);

        const reserved: ReservedLine[] = [];
        const ordered = lines.map((line, lineNo) => ({ ...line, lineNo })).sort(byProduct);
        for (const line of ordered) {
          const { rows } = await tx.query<{
            id: string;
            name: string;
            price_minor: string;
            currency: string;
            stock: number;
            low_stock_threshold: number;
          }>(RESERVE_LINE, [line.productId, line.quantity, orderId, line.lineNo]);
          const p = rows[0];
          if (!p) throw await whyNot(tx, line);
          reserved[line.lineNo] = {
            productId: line.productId,
            quantity: line.quantity,
            name: p.name,
            priceMinor: BigInt(p.price_minor),
            currency: p.currency,
          };
          await stockLowIfCrossed(tx, {
            id: p.id,
            name: p.name,
            before: p.stock + line.quantity,
            after: p.stock,
            threshold: p.low_stock_threshold,
          });
        }
        return { kind: "reserved", reservation: { lines: reserved, expireTime }, replay: false };
      });
    },

    /**
     * Returns an order's reserved or committed units; records a release of an order id that
     * never reserved, so a ReserveStock arriving late (after its order gave up) is refused.
     */
    release(orderId: string): Promise<ReleaseOutcome> {
      return withTransaction(pool, async (tx): Promise<ReleaseOutcome> => {
        // Twice at most: the second pass sees a reservation that committed while we inserted.
        for (let attempt = 0; attempt < 2; attempt++) {
          const r = await lockReservation(tx, orderId);
          if (!r) {
            const { rowCount } = await tx.query(
              `INSERT INTO reservations (order_id, state, expire_time) VALUES ($1, 'released', now())
               ON CONFLICT DO NOTHING`,
              [orderId],
            );
            if (rowCount) return "recorded";
            continue;
          }
          if (r.state === "released" || r.state === "expired") return "already-released";
          await returnUnits(tx, orderId, "released");
          return "released";
        }
        throw new Error(`reservation ${orderId} neither found nor inserted`);
      });
    },

    /**
     * Makes a reservation permanent. One past its expiry that the worker has not reached yet is
     * expired here, so "expired" always means its units are back in stock.
     */
    async commit(orderId: string): Promise<CommitOutcome> {
      const committed = await pool.query({
        name: "commit-reserved",
        text: COMMIT_RESERVED,
        values: [orderId],
      });
      if (committed.rowCount === 1) return "committed";
      return withTransaction(pool, async (tx): Promise<CommitOutcome> => {
        const r = await lockReservation(tx, orderId);
        if (!r) return "not-found";
        if (r.state !== "reserved") return r.state;
        if (r.due) {
          await returnUnits(tx, orderId, "expired");
          return "expired";
        }
        await tx.query(
          "UPDATE reservations SET state = 'committed', updated_at = now() WHERE order_id = $1",
          [orderId],
        );
        return "committed";
      });
    },

    /**
     * Expires one reservation past its time, if any is due and not locked by another replica
     * (SKIP LOCKED: replicas share the work, none waits), in a transaction of its own, so each
     * holds its products' locks only briefly. Returns its order id.
     */
    expireOne(): Promise<string | undefined> {
      return withTransaction(pool, async (tx) => {
        const { rows } = await tx.query<{ order_id: string }>(
          `SELECT order_id FROM reservations WHERE state = 'reserved' AND expire_time <= now()
           ORDER BY expire_time LIMIT 1 FOR UPDATE SKIP LOCKED`,
        );
        const orderId = rows[0]?.order_id;
        if (orderId) await returnUnits(tx, orderId, "expired");
        return orderId;
      });
    },
  };

  /** One line reserved in one statement, or undefined when the full transaction must decide. */
  async function reserveOne(orderId: string, line: StockLine, ttlS: number) {
    try {
      const { rows } = await pool.query<Omit<LineRow, "product_id" | "quantity"> & { expire_time: Date }>({
        name: "reserve-one",
        text: RESERVE_ONE,
        values: [line.productId, line.quantity, orderId, ttlS],
      });
      const r = rows[0];
      if (!r) return undefined;
      const reserved = { ...line, name: r.name, priceMinor: BigInt(r.price_minor), currency: r.currency };
      return {
        kind: "reserved",
        reservation: { lines: [reserved], expireTime: r.expire_time },
        replay: false,
      } satisfies ReserveOutcome;
    } catch (err) {
      if (RETRY_IN_FULL.has((err as { code?: string }).code ?? "")) return undefined;
      throw err;
    }
  }

  /** A ReserveStock for an order id seen before: a replay, or refused. */
  async function existing(tx: Tx, orderId: string, lines: StockLine[]): Promise<ReserveOutcome> {
    const r = await lockReservation(tx, orderId);
    if (!r) throw new Error(`reservation ${orderId} conflicted but is not there`);
    if (r.state === "released" || r.state === "expired") return { kind: r.state };
    const stored = await storedLines(tx, orderId);
    if (!sameLines(stored, lines)) {
      throw fail(Code.InvalidArgument, "lines: this order id already reserved other lines");
    }
    if (r.state === "reserved" && r.due) {
      await returnUnits(tx, orderId, "expired");
      return { kind: "expired" };
    }
    // In the order of this request, which may list the same lines differently.
    const byId = new Map(stored.map((s) => [s.productId, s]));
    const inRequestOrder = lines.flatMap((l) => byId.get(l.productId) ?? []);
    return {
      kind: "reserved",
      reservation: { lines: inRequestOrder, expireTime: r.expire_time },
      replay: true,
    };
  }
}

export type ReservationStore = ReturnType<typeof createPgReservationStore>;
