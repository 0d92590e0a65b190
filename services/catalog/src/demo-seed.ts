import { randomUUID } from "node:crypto";
import { type Logger, type Pool, withTransaction } from "@protomesh/platform";
import { insertProduct, type ProductValues } from "./pg-product-store.ts";

type Demo = Omit<ProductValues, "currency" | "imageUrl" | "lowStockThreshold"> & { stock: number };

// A small shop a newcomer can browse, search and buy from at once.
const DEMO: Demo[] = [
  {
    category: "books",
    name: "The Pragmatic Programmer",
    priceMinor: 4299n,
    stock: 25,
    description:
      "Classic advice on the craft of software development, from tracer bullets to broken windows.",
  },
  {
    category: "books",
    name: "Designing Data-Intensive Applications",
    priceMinor: 4999n,
    stock: 18,
    description: "Replication, partitioning, transactions and streams: how reliable data systems work.",
  },
  {
    category: "books",
    name: "A Field Guide to Coffee",
    priceMinor: 2450n,
    stock: 12,
    description: "From bean to cup: origins, roasting, grinding and brewing, with tasting notes.",
  },
  {
    category: "books",
    name: "Mountain Trails of Europe",
    priceMinor: 2999n,
    stock: 9,
    description: "Forty day hikes and hut-to-hut routes, with maps and elevation profiles.",
  },
  {
    category: "coffee",
    name: "Ethiopia Yirgacheffe, 250 g",
    priceMinor: 1290n,
    stock: 40,
    description: "Light roast single-origin coffee beans with notes of jasmine, lemon and bergamot.",
  },
  {
    category: "coffee",
    name: "Colombia Huila, 250 g",
    priceMinor: 1150n,
    stock: 35,
    description: "Medium roast coffee beans: caramel, red apple and a round, sweet body.",
  },
  {
    category: "coffee",
    name: "Espresso Blend, 1 kg",
    priceMinor: 3400n,
    stock: 20,
    description: "Dark roast blend for espresso and milk drinks: chocolate, hazelnut, low acidity.",
  },
  {
    category: "coffee",
    name: "French Press, 1 l",
    priceMinor: 3490n,
    stock: 15,
    description: "Borosilicate glass coffee maker with a stainless steel plunger and filter.",
  },
  {
    category: "coffee",
    name: "Hand Grinder",
    priceMinor: 6900n,
    stock: 7,
    description: "Conical steel burrs, stepped adjustment from espresso fine to french press coarse.",
  },
  {
    category: "gear",
    name: "Enamel Camping Mug",
    priceMinor: 1400n,
    stock: 50,
    description: "Light, unbreakable enamel mug for coffee by the campfire, 350 ml.",
  },
  {
    category: "gear",
    name: "Trail Backpack, 28 l",
    priceMinor: 8900n,
    stock: 10,
    description: "Water-resistant day pack with hip belt, rain cover and laptop sleeve.",
  },
  {
    category: "gear",
    name: "Insulated Bottle, 750 ml",
    priceMinor: 2900n,
    stock: 30,
    description: "Stainless steel bottle that keeps coffee hot for 12 hours and water cold for 24.",
  },
  {
    category: "gear",
    name: "Headlamp",
    priceMinor: 3200n,
    stock: 0,
    description: "Rechargeable 400-lumen headlamp with red light mode. Back in stock soon.",
  },
];

// pg_advisory_xact_lock key: replicas starting at once seed one after the other, and the
// second finds the table no longer empty.
const SEED_LOCK = 7_460_055;

/**
 * Fills an empty catalog with the demo products (in the shop's currency), once: inside one
 * transaction holding an advisory lock, only when no product exists, deleted ones included.
 */
export async function seedDemoProducts(pool: Pool, currency: string, log: Logger): Promise<void> {
  const seeded = await withTransaction(pool, async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock($1)", [SEED_LOCK]);
    const { rowCount } = await tx.query("SELECT 1 FROM products LIMIT 1");
    if (rowCount) return 0;
    for (const { stock, ...values } of DEMO) {
      await insertProduct(
        tx,
        randomUUID(),
        { ...values, currency, imageUrl: "", lowStockThreshold: 3 },
        stock,
        "demo-seed",
      );
    }
    return DEMO.length;
  });
  if (seeded) log.info({ products: seeded }, "seeded the empty catalog with demo products");
}
