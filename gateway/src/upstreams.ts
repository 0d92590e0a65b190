import type { DescService } from "@bufbuild/protobuf";
import { AuthService } from "@protomesh/contracts/auth/v1/auth_pb";
import { NotifyService } from "@protomesh/contracts/notify/v1/notify_pb";
import { UserService } from "@protomesh/contracts/user/v1/user_pb";

/**
 * The services behind the gateway. Routes come from their descriptors: every PUBLIC, USER and
 * ADMIN method is served, INTERNAL ones are not. Adding a service is one line here.
 */
export const upstreamServices: readonly { name: string; defaultPort: number; service: DescService }[] = [
  { name: "auth", defaultPort: 50051, service: AuthService },
  { name: "user", defaultPort: 50052, service: UserService },
  { name: "notify", defaultPort: 50053, service: NotifyService },
];
