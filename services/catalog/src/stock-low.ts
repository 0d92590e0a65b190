import { timestampNow } from "@bufbuild/protobuf/wkt";
import { StockLowSchema } from "@protomesh/contracts/catalog/v1/events_pb";
import { addEvent, type Tx } from "@protomesh/platform";

/** A product's stock right after a change, as the changing statement returned it. */
export interface StockChange {
  id: string;
  name: string;
  before: number;
  after: number;
  threshold: number;
}

/**
 * Emits StockLow when this change took the stock from above the threshold to at or under it:
 * once per crossing, however many sales follow below it (a later rise above and fall again is
 * a new crossing). Runs in the changing transaction, under the product's row lock, so two
 * concurrent sales cannot both see themselves as the crossing.
 */
export async function stockLowIfCrossed(tx: Tx, c: StockChange): Promise<void> {
  if (c.threshold <= 0 || c.before <= c.threshold || c.after > c.threshold) return;
  await addEvent(tx, StockLowSchema, {
    productId: c.id,
    name: c.name,
    stock: c.after,
    threshold: c.threshold,
    occurTime: timestampNow(),
  });
}
