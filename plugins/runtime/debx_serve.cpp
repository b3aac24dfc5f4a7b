/*
 * debx_serve: JSON-lines inference with a TensorRT plan, for any service to wrap.
 *
 *   debx_serve --plan model.plan --spm spm.model|CHECKPOINT_DIR [--plugins libdebx_plugins.so]... [--max-length 512]
 *              [--batch-size 8] [--pooling cls|mean]
 *
 * stdin: {"text": ..., "text_pair": ...} per line. Lines are grouped into batches of --batch-size (the last one may
 * be smaller), tokenized exactly like transformers' DebertaV2Tokenizer (with the normalization of the transformers
 * version the checkpoint folder was written with: tokenizer.h), right-padded, run, and answered in order:
 *   {"logits": [...]}      when the engine has a `logits` output (classification / regression heads)
 *   {"embedding": [...]}   otherwise, from `last_hidden_state` pooled over the real tokens (--pooling)
 *   {"error": "..."}       for a line that could not be processed
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine.h"
#include "requests.h"
#include "tokenizer.h"

namespace
{

struct Options
{
    std::string plan;
    std::string spm;
    std::vector<std::string> plugins;
    int32_t maxLength = 512;
    size_t batchSize = 8;
    bool meanPooling = false;
};

[[noreturn]] void usage(char const* error)
{
    if (error != nullptr)
    {
        std::fprintf(stderr, "debx_serve: error: %s\n", error);
    }
    std::fprintf(stderr,
        "usage: debx_serve --plan model.plan --spm spm.model|CHECKPOINT_DIR [--plugins libdebx_plugins.so]... "
        "[--max-length N] "
        "[--batch-size N] [--pooling cls|mean] < requests.jsonl\n");
    std::exit(error != nullptr ? 2 : 0);
}

Options parseArgs(int argc, char** argv)
{
    Options o;
    debx::runtime::ArgReader a(argc, argv, usage);
    while (a.next())
    {
        if (a.common(o.maxLength, o.batchSize))
        {
            continue;
        }
        if (a.arg() == "--plan")
        {
            o.plan = a.value();
        }
        else if (a.arg() == "--spm")
        {
            o.spm = a.value();
        }
        else if (a.arg() == "--plugins")
        {
            o.plugins.push_back(a.value());
        }
        else if (a.arg() == "--pooling")
        {
            std::string const v = a.value();
            if (v != "cls" && v != "mean")
            {
                usage("--pooling must be cls or mean");
            }
            o.meanPooling = v == "mean";
        }
        else
        {
            usage(("unknown argument " + a.arg()).c_str());
        }
    }
    if (o.plan.empty() || o.spm.empty())
    {
        usage("--plan and --spm are required");
    }
    return o;
}

//! Row r of a (B, ...) output as JSON: logits as they are, hidden states pooled over the real tokens.
nlohmann::json answer(debx::runtime::Output const& out, debx::runtime::Encoding const& row, size_t r, bool mean)
{
    if (out.shape.size() == 2) // (B, C): logits or a pooled embedding
    {
        size_t const width = static_cast<size_t>(out.shape[1]);
        std::vector<float> values(out.values.begin() + r * width, out.values.begin() + (r + 1) * width);
        return out.name == "logits" ? nlohmann::json{{"logits", values}} : nlohmann::json{{"embedding", values}};
    }
    if (out.shape.size() != 3)
    {
        return nlohmann::json{{"error", "output " + out.name + " has an unexpected rank"}};
    }
    size_t const seq = static_cast<size_t>(out.shape[1]);
    size_t const hidden = static_cast<size_t>(out.shape[2]);
    float const* base = out.values.data() + r * seq * hidden;
    std::vector<float> pooled(hidden, 0.0F);
    if (!mean)
    {
        pooled.assign(base, base + hidden); // [CLS]
    }
    else
    {
        float count = 0.0F;
        for (size_t t = 0; t < seq; ++t)
        {
            if (row.attentionMask[t] == 0)
            {
                continue;
            }
            count += 1.0F;
            for (size_t c = 0; c < hidden; ++c)
            {
                pooled[c] += base[t * hidden + c];
            }
        }
        for (float& v : pooled)
        {
            v /= count > 0.0F ? count : 1.0F;
        }
    }
    return nlohmann::json{{"embedding", pooled}};
}

void flush(debx::runtime::DebertaTokenizer const& tok, debx::runtime::Session& session,
    std::vector<std::string> const& lines, Options const& o)
{
    debx::runtime::EncodedBatch b = debx::runtime::encodeLines(tok, lines, o.maxLength);
    std::vector<debx::runtime::Encoding> const& rows = b.rows;
    std::vector<size_t> const& rowOf = b.rowOf;
    std::vector<std::string>& replies = b.replies;
    if (!rows.empty())
    {
        try
        {
            std::vector<debx::runtime::Output> const outputs = session.run(rows);
            debx::runtime::Output const* chosen = nullptr;
            for (auto const& out : outputs)
            {
                if (chosen == nullptr || out.name == "logits")
                {
                    chosen = &out;
                }
            }
            for (size_t n = 0; n < lines.size(); ++n)
            {
                if (rowOf[n] != SIZE_MAX)
                {
                    replies[n] = answer(*chosen, rows[rowOf[n]], rowOf[n], o.meanPooling).dump();
                }
            }
        }
        catch (std::exception const& e)
        {
            for (size_t n = 0; n < lines.size(); ++n)
            {
                if (rowOf[n] != SIZE_MAX)
                {
                    replies[n] = debx::runtime::errorLine(e.what());
                }
            }
        }
    }
    for (std::string const& reply : replies)
    {
        std::cout << reply << '\n';
    }
    std::cout.flush();
}

} // namespace

int main(int argc, char** argv)
{
    Options const o = parseArgs(argc, argv);
    std::unique_ptr<debx::runtime::DebertaTokenizer> tok;
    std::unique_ptr<debx::runtime::Engine> engine;
    std::unique_ptr<debx::runtime::Session> session; // one thread: one session (engine.h's thread-safety contract)
    try
    {
        tok = std::make_unique<debx::runtime::DebertaTokenizer>(o.spm);
        engine = std::make_unique<debx::runtime::Engine>(o.plan, o.plugins);
        session = engine->createSession();
    }
    catch (std::exception const& e)
    {
        std::fprintf(stderr, "debx_serve: error: %s\n", e.what());
        return 2;
    }
    debx::runtime::forEachBatch(
        std::cin, o.batchSize, [&](std::vector<std::string> const& lines) { flush(*tok, *session, lines, o); });
    return 0;
}
