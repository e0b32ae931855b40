#pragma once

// An asynchronous Redis client on a worker's loop (filters::RedisClient): one connection, RESP2,
// commands pipelined (those sent in one loop turn leave in one write), replies matched to calls
// in order. AUTH (password, or ACL user and password) and TLS (net::ClientTls over the stream's
// memory BIOs). A call unanswered after `timeout` fails, and so does the connection (its later
// replies could no longer be matched); it is then made again after a delay that doubles from
// 50 ms up to 2 s while attempts keep failing. While no connection is up, calls fail at once:
// a caller that has a fallback (a rate limiter's on_store_error) uses it without waiting.
//
// Completion callbacks run on the loop, never inside command(). Destroying the client drops the
// calls in flight (their callbacks never run); the connection closes and its memory goes once
// the loop has closed its handles.

#include <uv.h>

#include <memory>

#include "filters/filter.h"
#include "filters/redis.h"

namespace sluice::redis {

// `dispatcher` is the loop's (its clock and timers); both must outlive the client's handles,
// which close before the loop ends as long as the client is destroyed before then.
std::unique_ptr<filters::RedisClient> connect(uv_loop_t* loop, filters::Dispatcher& dispatcher,
                                              const filters::RedisOptions& options);

}  // namespace sluice::redis
