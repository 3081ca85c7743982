/** Errors in the OpenAI API's shape: {"error": {"message", "type", "param", "code"}}, with an HTTP status. */

export type ErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  | "service_unavailable"
  | "server_error";

export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 about one request field. */
export const badField = (param: string, message: string, code: string | null = null) =>
  new ApiError(400, message, "invalid_request_error", param, code);

/** Any thrown value as an ApiError (an unexpected one is a 500 that keeps its message). */
export function asApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  return new ApiError(500, (e as Error)?.message ?? String(e), "server_error");
}
