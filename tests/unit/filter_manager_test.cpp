// The FilterManager: every status in every phase, resumes (inline, later, late, stray),
// asynchronous message verdicts per direction, counted read-disables, and onDestroy exactly once
// whatever ends the stream.

#include "proxy/filter_manager.h"

#include <gtest/gtest.h>

#include "tests/unit/support/fakes.h"

namespace sluice {
namespace {

using filters::Direction;
using filters::Filter;
using filters::MessageVerdict;
using filters::Status;

constexpr Direction kUp = Direction::kDownstreamToUpstream;
constexpr Direction kDown = Direction::kUpstreamToDownstream;

// What a scripted filter does in each phase, and what it saw.
struct Script {
  Status head = Status::kContinue;
  Status body = Status::kContinue;
  Status response = Status::kContinue;
  Status message = Status::kContinue;
  bool reply_in_head = false;
  bool resume_inline = false;  // calls resume() inside the phase
  bool drop_in_frame = false;
  bool close_in_message = false;
  std::vector<std::string> calls;
  std::vector<std::string> bodies;
  int destroys = 0;
  filters::StreamCallbacks* cb = nullptr;
};

class ScriptStream : public filters::StreamFilter {
 public:
  explicit ScriptStream(Script* s) : s_(s) {}
  Status onRequestHead(filters::RequestHead&) override {
    s_->cb = &callbacks();
    s_->calls.push_back("head");
    if (s_->reply_in_head) {
      callbacks().sendLocalReply(403, "no");
      return Status::kStop;
    }
    if (s_->resume_inline) {
      callbacks().resume();
    }
    return s_->head;
  }
  Status onRequestBody(std::string_view data, bool end) override {
    s_->calls.push_back(end ? "body-end" : "body");
    s_->bodies.emplace_back(data);
    return s_->body;
  }
  Status onResponseHead(filters::ResponseHead&) override {
    s_->cb = &callbacks();
    s_->calls.push_back("response");
    return s_->response;
  }
  Status onFrame(const filters::FrameInfo&) override {
    s_->calls.push_back("frame");
    if (s_->drop_in_frame) {
      callbacks().dropMessage("drop");
    }
    return Status::kContinue;
  }
  Status onMessage(filters::Message& m) override {
    s_->cb = &callbacks();
    s_->calls.push_back(std::string("message:") + std::string(m.payload()));
    if (s_->close_in_message) {
      callbacks().closeWebSocket(1008, "bad");
    }
    return s_->message;
  }
  void onDestroy() override { ++s_->destroys; }

 private:
  Script* s_;
};

class ScriptFilter : public Filter {
 public:
  ScriptFilter(Script* s, uint8_t phases) : Filter("f"), s_(s), phases_(phases) {}
  uint8_t phases() const override { return phases_; }
  std::unique_ptr<filters::StreamFilter> create() const override {
    return std::make_unique<ScriptStream>(s_);
  }

 private:
  Script* s_;
  uint8_t phases_;
};

class Owner : public FilterOwner {
 public:
  void filterLocalReply(uint16_t status, std::string_view reason, std::string_view, bool) override {
    replies.push_back(status);
    last_reason = reason;
  }
  void filterCloseWebSocket(Direction from, uint16_t code, std::string_view) override {
    closes.push_back({from, code});
  }
  void filterReadDisable(Direction d, bool disable) override {
    read_changes.push_back({d, disable});
  }
  void onPhaseResumed(Phase p) override { resumed.push_back(p); }
  void onMessageVerdict(Direction d, const MessageVerdict& v) override {
    verdicts.push_back({d, v.kind});
  }
  std::vector<uint16_t> replies;
  std::string last_reason;
  std::vector<std::pair<Direction, uint16_t>> closes;
  std::vector<std::pair<Direction, bool>> read_changes;
  std::vector<Phase> resumed;
  std::vector<std::pair<Direction, MessageVerdict::Kind>> verdicts;
};

constexpr uint8_t kAll = Filter::kRequestHead | Filter::kRequestBody | Filter::kResponseHead |
                         Filter::kFrame | Filter::kMessage;

struct Fixture {
  explicit Fixture(std::vector<Script*> scripts, uint64_t body_limit = 1 << 20,
                   uint8_t phases = kAll) {
    std::vector<filters::ConstFilterPtr> chain;
    std::vector<metrics::FilterSlot*> counters;
    for (size_t i = 0; i < scripts.size(); ++i) {
      chain.push_back(std::make_shared<ScriptFilter>(scripts[i], phases));
      counters.push_back(&slots[i]);
    }
    fm = std::make_unique<FilterManager>(owner, dispatcher, chain, counters,
                                         std::vector<std::shared_ptr<filters::WorkerState>>{},
                                         body_limit);
  }
  uint64_t decided(size_t filter, metrics::FilterDecision d) {
    return slots[filter].decisions[d].get();
  }
  Owner owner;
  testing::FakeDispatcher dispatcher;
  metrics::FilterSlot slots[4];
  std::unique_ptr<FilterManager> fm;
  filters::RequestHead head;
  filters::ResponseHead response;
};

using R = FilterManager::Result;
using MR = FilterManager::MessageResult;

TEST(FilterManager, HeadAllContinue) {
  Script a, b;
  Fixture f({&a, &b});
  EXPECT_EQ(f.fm->requestHead(f.head, false), R::kContinue);
  EXPECT_EQ(a.calls, std::vector<std::string>{"head"});
  EXPECT_EQ(b.calls, std::vector<std::string>{"head"});
  EXPECT_EQ(f.decided(0, metrics::kDecisionContinue), 1u);
  EXPECT_EQ(f.decided(1, metrics::kDecisionContinue), 1u);
}

TEST(FilterManager, HeadStopThenResume) {
  Script a, b;
  a.head = Status::kStop;
  Fixture f({&a, &b});
  EXPECT_EQ(f.fm->requestHead(f.head, false), R::kStopped);
  EXPECT_TRUE(b.calls.empty());  // the chain waits at the first filter
  b.cb = nullptr;
  a.cb->resume();
  EXPECT_EQ(b.calls, std::vector<std::string>{"head"});
  ASSERT_EQ(f.owner.resumed.size(), 1u);
  EXPECT_EQ(f.owner.resumed[0], FilterOwner::Phase::kRequestHead);
  a.cb->resume();  // a second resume is stray: ignored
  EXPECT_EQ(f.owner.resumed.size(), 1u);
  EXPECT_EQ(b.calls.size(), 1u);
}

TEST(FilterManager, ResumeInsideThePhaseIsContinue) {
  Script a, b;
  a.head = Status::kStop;
  a.resume_inline = true;
  Fixture f({&a, &b});
  EXPECT_EQ(f.fm->requestHead(f.head, false), R::kContinue);
  EXPECT_EQ(b.calls.size(), 1u);
  EXPECT_TRUE(f.owner.resumed.empty());  // nothing to resume: it never stopped
}

TEST(FilterManager, LocalReplyEndsEveryPhase) {
  Script a, b;
  a.reply_in_head = true;
  Fixture f({&a, &b});
  EXPECT_EQ(f.fm->requestHead(f.head, true), R::kEnded);
  EXPECT_EQ(f.owner.replies, std::vector<uint16_t>{403});
  EXPECT_TRUE(b.calls.empty());
  EXPECT_EQ(f.decided(0, metrics::kDecisionReject), 1u);
  // Nothing runs after the answer.
  EXPECT_EQ(f.fm->requestBody("x", true), R::kEnded);
  EXPECT_EQ(f.fm->responseHead(f.response), R::kEnded);
  EXPECT_EQ(a.calls, std::vector<std::string>{"head"});
}

TEST(FilterManager, StopAndBufferWaitsForTheWholeBody) {
  Script a, b;
  a.head = Status::kStopAndBuffer;
  Fixture f({&a, &b});
  EXPECT_EQ(f.fm->requestHead(f.head, true), R::kStopped);
  EXPECT_TRUE(f.fm->buffering());
  EXPECT_EQ(f.fm->requestBody("hello ", false), R::kStopped);
  EXPECT_EQ(f.fm->requestBody("world", false), R::kStopped);
  EXPECT_TRUE(b.calls.empty());
  // At the end: the buffering filter sees all of it at once, then the head goes on.
  EXPECT_EQ(f.fm->requestBody("", true), R::kContinue);
  EXPECT_EQ(a.bodies, std::vector<std::string>{"hello world"});
  EXPECT_EQ(b.calls, std::vector<std::string>{"head"});
  bool complete = false;
  EXPECT_EQ(f.fm->takeBufferedBody(&complete), "hello world");
  EXPECT_TRUE(complete);
  EXPECT_FALSE(f.fm->buffering());
}

TEST(FilterManager, StopAndBufferWithoutBody) {
  Script a;
  a.head = Status::kStopAndBuffer;
  Fixture f({&a});
  EXPECT_EQ(f.fm->requestHead(f.head, false), R::kContinue);
  EXPECT_EQ(a.calls, (std::vector<std::string>{"head", "body-end"}));
}

TEST(FilterManager, StopAndBufferThenAsyncVerdict) {
  Script a, b;
  a.head = Status::kStopAndBuffer;
  a.body = Status::kStop;
  Fixture f({&a, &b});
  f.fm->requestHead(f.head, true);
  EXPECT_EQ(f.fm->requestBody("data", true), R::kStopped);
  EXPECT_TRUE(b.calls.empty());
  a.cb->resume();
  EXPECT_EQ(b.calls, std::vector<std::string>{"head"});
  ASSERT_EQ(f.owner.resumed.size(), 1u);
}

TEST(FilterManager, BufferedBodyIsBounded) {
  Script a;
  a.head = Status::kStopAndBuffer;
  Fixture f({&a}, 8);
  f.fm->requestHead(f.head, true);
  EXPECT_EQ(f.fm->requestBody("12345", false), R::kStopped);
  EXPECT_EQ(f.fm->requestBody("6789", false), R::kEnded);
  EXPECT_EQ(f.owner.replies, std::vector<uint16_t>{413});
}

TEST(FilterManager, StreamingBodyFilters) {
  Script a, b;
  Fixture f({&a, &b});
  f.fm->requestHead(f.head, true);
  EXPECT_EQ(f.fm->requestBody("ab", false), R::kContinue);
  EXPECT_EQ(f.fm->requestBody("", true), R::kContinue);
  EXPECT_EQ(a.bodies, (std::vector<std::string>{"ab", ""}));
  EXPECT_EQ(b.bodies, (std::vector<std::string>{"ab", ""}));
}

TEST(FilterManager, ResponseHeadStopAndResume) {
  Script a, b;
  a.response = Status::kStop;
  Fixture f({&a, &b});
  f.fm->requestHead(f.head, false);
  EXPECT_EQ(f.fm->responseHead(f.response), R::kStopped);
  EXPECT_EQ(b.calls, std::vector<std::string>{"head"});
  a.cb->resume();
  ASSERT_EQ(f.owner.resumed.size(), 1u);
  EXPECT_EQ(f.owner.resumed[0], FilterOwner::Phase::kResponseHead);
  EXPECT_EQ(b.calls.back(), "response");
}

TEST(FilterManager, FrameDropAndClose) {
  Script a, b;
  a.drop_in_frame = true;
  Fixture f({&a, &b});
  filters::FrameInfo info{kUp, filters::MessageType::kText, true, true, 3, 3};
  EXPECT_EQ(f.fm->frame(info), MR::kDrop);
  EXPECT_TRUE(b.calls.empty());  // dropped: the rest of the chain does not see it
  EXPECT_EQ(f.decided(0, metrics::kDecisionDrop), 1u);
  a.drop_in_frame = false;
  EXPECT_EQ(f.fm->frame(info), MR::kForward);
  EXPECT_EQ(b.calls, std::vector<std::string>{"frame"});
}

TEST(FilterManager, MessageCloseGoesTowardItsSender) {
  Script a;
  a.close_in_message = true;
  Fixture f({&a});
  std::string p = "x";
  filters::Message m(kDown, filters::MessageType::kText, &p);
  EXPECT_EQ(f.fm->message(m), MR::kClosed);
  ASSERT_EQ(f.owner.closes.size(), 1u);
  EXPECT_EQ(f.owner.closes[0].first, kDown);
  EXPECT_EQ(f.owner.closes[0].second, 1008);
  EXPECT_EQ(f.decided(0, metrics::kDecisionClose), 1u);
}

TEST(FilterManager, MessagesWaitPerDirection) {
  Script a, b;
  a.message = Status::kStop;
  Fixture f({&a, &b});
  std::string p1 = "up", p2 = "down";
  filters::Message up(kUp, filters::MessageType::kText, &p1);
  filters::Message down(kDown, filters::MessageType::kText, &p2);
  EXPECT_EQ(f.fm->message(up), MR::kStopped);
  EXPECT_EQ(f.fm->message(down), MR::kStopped);  // the other direction waits on its own
  EXPECT_TRUE(b.calls.empty());
  filters::StreamCallbacks* cb = a.cb;
  cb->resumeMessage(kDown, MessageVerdict::forward());
  EXPECT_EQ(b.calls, std::vector<std::string>{"message:down"});
  ASSERT_EQ(f.owner.verdicts.size(), 1u);
  EXPECT_EQ(f.owner.verdicts[0].first, kDown);
  EXPECT_EQ(f.owner.verdicts[0].second, MessageVerdict::Kind::kForward);
  cb->resumeMessage(kUp, MessageVerdict::drop("no"));
  EXPECT_EQ(b.calls.size(), 1u);  // dropped: b never sees it
  EXPECT_EQ(f.owner.verdicts.back().second, MessageVerdict::Kind::kDrop);
  EXPECT_EQ(f.decided(0, metrics::kDecisionDrop), 1u);
  cb->resumeMessage(kUp, MessageVerdict::forward());  // nothing waits any more: ignored
  EXPECT_EQ(f.owner.verdicts.size(), 2u);
}

TEST(FilterManager, AsyncCloseVerdict) {
  Script a;
  a.message = Status::kStop;
  Fixture f({&a});
  std::string p = "x";
  filters::Message m(kDown, filters::MessageType::kBinary, &p);
  f.fm->message(m);
  a.cb->resumeMessage(kDown, MessageVerdict::close(1008, "policy"));
  ASSERT_EQ(f.owner.closes.size(), 1u);
  EXPECT_EQ(f.owner.closes[0], std::make_pair(kDown, uint16_t{1008}));
}

TEST(FilterManager, ReadDisableIsCountedPerFilter) {
  Script a, b;
  Fixture f({&a, &b});
  f.fm->requestHead(f.head, false);
  a.cb->readDisable(kUp, true);
  b.cb->readDisable(kUp, true);
  b.cb->readDisable(kUp, false);
  EXPECT_EQ(f.owner.read_changes.size(), 1u);  // still disabled: a has not enabled
  b.cb->readDisable(kUp, false);               // b has nothing left to undo: ignored
  EXPECT_EQ(f.owner.read_changes.size(), 1u);
  a.cb->readDisable(kDown, true);
  f.fm->destroy();  // releases what the filters still held
  ASSERT_EQ(f.owner.read_changes.size(), 4u);
  EXPECT_EQ(f.owner.read_changes[2], std::make_pair(kUp, false));
  EXPECT_EQ(f.owner.read_changes[3], std::make_pair(kDown, false));
}

TEST(FilterManager, OnDestroyExactlyOnceAndNothingAfter) {
  Script a, b;
  a.head = Status::kStop;
  {
    Fixture f({&a, &b});
    f.fm->requestHead(f.head, false);
    f.fm->destroy();
    EXPECT_EQ(a.destroys, 1);
    EXPECT_EQ(b.destroys, 1);
    a.cb->resume();  // a late resume (a timer the filter forgot) changes nothing
    EXPECT_TRUE(b.calls.empty());
    EXPECT_TRUE(f.owner.resumed.empty());
  }
  EXPECT_EQ(a.destroys, 1);  // not again from the destructor
  Script c;
  { Fixture f({&c}); }
  EXPECT_EQ(c.destroys, 1);  // the destructor ends streams nobody ended
}

TEST(FilterManager, OnlyDeclaredPhasesRun) {
  Script a;
  Fixture f({&a}, 1 << 20, Filter::kFrame);
  EXPECT_EQ(f.fm->requestHead(f.head, true), R::kContinue);
  EXPECT_EQ(f.fm->requestBody("x", true), R::kContinue);
  EXPECT_TRUE(a.calls.empty());
  EXPECT_FALSE(f.fm->has(Filter::kMessage));
}

TEST(FilterManager, AttributesAreSharedByTheStreamsFilters) {
  Script a, b;
  Fixture f({&a, &b});
  EXPECT_EQ(f.fm->requestHead(f.head, false), R::kContinue);
  // What the first filter learned (a verified claim), the second reads, for the stream's life.
  a.cb->setAttribute("claim:sub", "alice");
  a.cb->setAttribute("claim:tier", "gold");
  EXPECT_EQ(f.fm->attribute("claim:sub"), "alice");
  a.cb->setAttribute("claim:sub", "bob");  // set again: replaced
  EXPECT_EQ(a.cb->attribute("claim:sub"), "bob");
  EXPECT_EQ(a.cb->attribute("claim:tier"), "gold");
  EXPECT_EQ(a.cb->attribute("claim:none"), std::nullopt);
  std::string payload = "x";
  filters::Message msg(kUp, filters::MessageType::kText, &payload);
  b.cb = nullptr;
  f.fm->message(msg);  // after the 101 the same stream still knows them
  ASSERT_NE(b.cb, nullptr);
  EXPECT_EQ(b.cb->attribute("claim:sub"), "bob");
}

}  // namespace
}  // namespace sluice
