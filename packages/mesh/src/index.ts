export {
  addressVariable,
  type DevContext,
  type MeshService,
  meshServices,
  type ServiceName,
} from "./services.ts";
