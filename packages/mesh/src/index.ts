export {
  addressVariable,
  type DevContext,
  type MeshService,
  meshServices,
  randomSecrets,
  type ServiceName,
} from "./services.ts";
