/** Status, headers and body of a response, the body parsed as JSON when it is JSON. */
export async function readResponse(res: Response): Promise<{ status: number; body: any; headers: Headers }> {
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch { /* not JSON */ }
  return { status: res.status, body, headers: res.headers };
}
