// Talking to the pointseg API from a page: fetch() that turns every non-2xx answer into one readable
// sentence (the status in words, then the server's own `detail`), and saving a response as a download.
"use strict";

// What the status code means, in words; the server's own detail follows it.
const STATUS_WORDS = {
  400: "The request was not understood",
  404: "Not found",
  408: "The upload was too slow",
  409: "Not possible right now",
  410: "This project is gone",
  413: "This file is too large",
  415: "This file is not an image",
  422: "Not accepted",
  503: "The server is busy",
  504: "The server took too long",
};

/** An API answer that was not 2xx, or a request that never got an answer. */
class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** Turn FastAPI's `detail` (a string, or a list of validation problems) into one sentence. */
function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => (item && item.msg ? item.msg : JSON.stringify(item))).join("; ");
  }
  return detail === undefined ? "" : JSON.stringify(detail);
}

async function errorFromResponse(response, statusWords = STATUS_WORDS) {
  let detail = "";
  try {
    const body = await response.json();
    detail = detailText(body.detail);
  } catch {
    detail = response.statusText;
  }
  const words = statusWords[response.status]
    || (response.status >= 500 ? "The server failed" : "The request was refused");
  let message = `${words} (${response.status})`;
  if (detail) message += `: ${detail}`;
  const retryAfter = response.headers.get("Retry-After");
  if (response.status === 503 && retryAfter) message += ` Try again in ${retryAfter} s.`;
  return new ApiError(message, response.status);
}

/**
 * fetch() that answers 2xx responses and throws an ApiError with a readable message otherwise;
 * `statusWords` lets a page say what a status means for its own requests.
 */
async function request(url, options, statusWords = STATUS_WORDS) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (failure) {
    throw new ApiError(
      `Could not reach the server (${failure.message}). Check that \`pointseg serve\` is still running.`,
      0,
    );
  }
  if (!response.ok) throw await errorFromResponse(response, statusWords);
  return response;
}

/** request() with a JSON body (for POST, PUT, PATCH). */
function sendJson(url, method, body) {
  return request(url, {
    method,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function saveBlob(blob, filename) {
  const link = document.createElement("a");
  const url = URL.createObjectURL(blob);
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/** The filename in `Content-Disposition: attachment; filename="x.tif"` (or filename*=UTF-8''x.tif). */
function dispositionFilename(header) {
  if (!header) return null;
  const encoded = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (encoded) return decodeURIComponent(encoded[1].trim());
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(header);
  return plain ? plain[1].trim() : null;
}

/** Fetch `url` and save the answer under the server's filename (else `fallback`). */
async function download(url, fallback) {
  const response = await request(url);
  const filename = dispositionFilename(response.headers.get("Content-Disposition")) || fallback;
  saveBlob(await response.blob(), filename);
  return filename;
}

function displayName(name) {
  return name.replace(/_/g, " ");
}

function formatShare(share) {
  if (share > 0 && share < 0.001) return "<0.1 %";
  return `${(share * 100).toFixed(1)} %`;
}
