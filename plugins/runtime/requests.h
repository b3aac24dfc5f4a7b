/*
 * debx runtime: JSON-lines requests shared by debx_tokenize and debx_serve.
 *
 * One request per line: {"text": "...", "text_pair": "..."} (text_pair optional, null or "" for none, as in
 * transformers, where an empty text_pair is no pair). A malformed line gets
 * {"error": "..."} in its place on stdout, so a service wrapping the program keeps its line accounting.
 * Also the pieces both programs share: command-line reading, batch encoding and the stdin batching loop.
 */
#pragma once

#include <cstdint>
#include <cstdlib>
#include <istream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer.h"

namespace debx
{
namespace runtime
{

struct Request
{
    std::string text;
    std::optional<std::string> textPair;
};

//! Parse one line; throws std::invalid_argument with a one-line reason.
inline Request parseRequest(std::string const& line)
{
    nlohmann::json j;
    try
    {
        j = nlohmann::json::parse(line);
    }
    catch (nlohmann::json::parse_error const&)
    {
        throw std::invalid_argument("line is not valid JSON");
    }
    if (!j.is_object())
    {
        throw std::invalid_argument("line must be a JSON object like {\"text\": \"...\"}");
    }
    auto const text = j.find("text");
    if (text == j.end() || !text->is_string())
    {
        throw std::invalid_argument("\"text\" must be a string");
    }
    Request r;
    r.text = text->get<std::string>();
    auto const pair = j.find("text_pair");
    if (pair != j.end() && !pair->is_null())
    {
        if (!pair->is_string())
        {
            throw std::invalid_argument("\"text_pair\" must be a string or null");
        }
        r.textPair = pair->get<std::string>();
        if (r.textPair->empty())
        {
            r.textPair.reset(); // transformers treats an empty text_pair as no pair: [CLS] a [SEP]
        }
    }
    return r;
}

inline std::string errorLine(std::string const& message)
{
    return nlohmann::json{{"error", message}}.dump();
}

//! Request lines encoded and right-padded as one batch; a line that failed keeps its place with an error reply.
struct EncodedBatch
{
    std::vector<Encoding> rows;        //!< the lines that encoded, padded to the longest
    std::vector<size_t> rowOf;         //!< line -> row, SIZE_MAX for a failed line
    std::vector<std::string> replies;  //!< line -> {"error": ...} for a failed line, "" otherwise
};

inline EncodedBatch encodeLines(DebertaTokenizer const& tok, std::vector<std::string> const& lines, int32_t maxLength)
{
    EncodedBatch b;
    b.rowOf.assign(lines.size(), SIZE_MAX);
    b.replies.resize(lines.size());
    for (size_t n = 0; n < lines.size(); ++n)
    {
        try
        {
            Request const r = parseRequest(lines[n]);
            b.rows.push_back(tok.encode(r.text, r.textPair ? &*r.textPair : nullptr, maxLength));
            b.rowOf[n] = b.rows.size() - 1;
        }
        catch (std::exception const& e)
        {
            b.replies[n] = errorLine(e.what());
        }
    }
    tok.padBatch(b.rows);
    return b;
}

//! Read lines from `in` and hand them to `flush` in batches of `batchSize` (the last batch may be smaller).
template <typename Flush>
void forEachBatch(std::istream& in, size_t batchSize, Flush&& flush)
{
    std::vector<std::string> pending;
    std::string line;
    while (std::getline(in, line))
    {
        pending.push_back(line);
        if (pending.size() == batchSize)
        {
            flush(pending);
            pending.clear();
        }
    }
    if (!pending.empty())
    {
        flush(pending);
    }
}

//! Walks argv; `usage` prints its message (or the help, for nullptr) and exits.
class ArgReader
{
public:
    ArgReader(int argc, char** argv, void (*usage)(char const*))
        : mArgc(argc)
        , mArgv(argv)
        , mUsage(usage)
    {
    }

    //! Advance to the next argument; false at the end.
    bool next()
    {
        if (++mIndex >= mArgc)
        {
            return false;
        }
        mArg = mArgv[mIndex];
        return true;
    }

    std::string const& arg() const
    {
        return mArg;
    }

    //! The value after the current flag.
    std::string value()
    {
        if (mIndex + 1 >= mArgc)
        {
            fail(("missing value for " + mArg).c_str());
        }
        return mArgv[++mIndex];
    }

    //! Flags every tool shares: --max-length, --batch-size, -h/--help. True when the current one was one of them.
    bool common(int32_t& maxLength, size_t& batchSize)
    {
        if (mArg == "--max-length")
        {
            maxLength = std::atoi(value().c_str());
            if (maxLength < 3)
            {
                fail("--max-length must be >= 3");
            }
        }
        else if (mArg == "--batch-size")
        {
            int const n = std::atoi(value().c_str());
            if (n < 1)
            {
                fail("--batch-size must be >= 1");
            }
            batchSize = static_cast<size_t>(n);
        }
        else if (mArg == "-h" || mArg == "--help")
        {
            fail(nullptr);
        }
        else
        {
            return false;
        }
        return true;
    }

    [[noreturn]] void fail(char const* error) const
    {
        mUsage(error);
        std::exit(2); // usage() exits; this keeps the compiler's flow analysis honest
    }

private:
    int mArgc;
    char** mArgv;
    void (*mUsage)(char const*);
    int mIndex = 0;
    std::string mArg;
};

} // namespace runtime
} // namespace debx
