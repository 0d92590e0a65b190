import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type GetMeRequest,
  GetMeRequestSchema,
  type GetMeResponse,
  GetMeResponseSchema,
} from "@protomesh/contracts/user/v1/user_pb";

/** gRPC path of UserService.GetMe, shared by the bare echo server and the raw grpc-js client. */
export const GET_ME_PATH = "/protomesh.user.v1.UserService/GetMe";

/** A realistic GetMe answer, so every transport in the bench moves the same payload a real profile would. */
export function sampleGetMeResponse(): GetMeResponse {
  return create(GetMeResponseSchema, {
    user: {
      id: "0192f0c4-6f1e-7a3b-9c5d-2e8f4a1b7c90",
      email: "ada.lovelace@example.com",
      displayName: "Ada Lovelace",
      bio: "Mathematician and writer, chiefly known for her work on Charles Babbage's proposed mechanical general-purpose computer, the Analytical Engine.",
      avatarUrl: "https://cdn.example.com/avatars/0192f0c4-6f1e-7a3b-9c5d-2e8f4a1b7c90.png",
      phone: "+4915123456789",
      locale: "en-GB",
      roles: ["user", "admin"],
      createTime: timestampFromDate(new Date("2024-03-01T09:30:00Z")),
      updateTime: timestampFromDate(new Date("2025-01-15T17:45:12Z")),
    },
  });
}

/** grpc-js wants Buffers; a view over the same bytes avoids a copy. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Encodes a GetMeRequest for grpc-js. */
export function serializeGetMeRequest(req: GetMeRequest): Buffer {
  return asBuffer(toBinary(GetMeRequestSchema, req));
}

/** Decodes a GetMeRequest for grpc-js. */
export function deserializeGetMeRequest(buf: Buffer): GetMeRequest {
  return fromBinary(GetMeRequestSchema, buf);
}

/** Encodes a GetMeResponse for grpc-js. */
export function serializeGetMeResponse(res: GetMeResponse): Buffer {
  return asBuffer(toBinary(GetMeResponseSchema, res));
}

/** Decodes a GetMeResponse for grpc-js; clients decode fully so they pay what a real caller pays. */
export function deserializeGetMeResponse(buf: Buffer): GetMeResponse {
  return fromBinary(GetMeResponseSchema, buf);
}
