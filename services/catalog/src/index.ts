export { catalogModule, createCatalogService } from "./app.ts";
export { type CatalogConfig, readCatalogConfig } from "./config.ts";
