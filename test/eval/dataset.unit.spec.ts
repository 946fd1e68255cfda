import { describe, expect, test } from "vitest";
import { memoryOfDoc, memoryScopeOf, parseCorpus, parseQrels, parseQueries, scopeMapping, titleOf } from "../../services/eval/dataset.js";

describe("eval dataset parsing", () => {
  test("qrels: header skipped, tabs or spaces, score <= 0 not relevant, the best score of a repeat kept", () => {
    const qrels = parseQrels("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 d2 2\nq2\td3\t0\nq1\td1\t3\n");
    expect([...qrels.keys()]).toEqual(["q1"]);
    expect([...qrels.get("q1")!]).toEqual([
      ["d1", 3],
      ["d2", 2],
    ]);
    expect(() => parseQrels("q1\td1\t1\nbroken line\n")).toThrow(/qrels line 2/);
  });

  test("corpus and queries: named fields, duplicate ids and missing fields refused, category defaults to all", () => {
    const corpus = parseCorpus('{"doc":"d1","body":"hello","conv":"c1"}\n\n{"doc":"d2","body":"bye","conv":7}', { id: "doc", text: "body", query: "q", scope: "conv", category: "cat" });
    expect(corpus.map((d) => [d.id, d.text, d.scope])).toEqual([
      ["d1", "hello", "c1"],
      ["d2", "bye", "7"],
    ]);
    expect(() => parseCorpus('{"id":"d1","text":"a","conv_id":"c"}\n{"id":"d1","text":"b","conv_id":"c"}')).toThrow(/twice/);
    expect(() => parseCorpus('{"id":"d1","conv_id":"c"}')).toThrow(/'text'/);
    const [query] = parseQueries('{"id":"q1","question":"why?","conv_id":"c1"}');
    expect(query).toEqual({ id: "q1", text: "why?", scope: "c1", category: "all" });
  });

  test("scopes: team:<value> with unsafe characters replaced; two values that collide are refused", () => {
    expect(memoryScopeOf("conv-26")).toBe("team:conv-26");
    expect(memoryScopeOf("a b/c")).toBe("team:a-b-c");
    expect(() => scopeMapping(["a b", "a/b"])).toThrow(/both become team:a-b/);
    expect([...scopeMapping(["x", "y", "x"])]).toEqual([
      ["x", "team:x"],
      ["y", "team:y"],
    ]);
  });

  test("a doc's memory: keyed by the doc id; title from a field or the text; previous docs of the scope before its text", () => {
    const [doc] = parseCorpus('{"id":"c1:D1:2","text":"Mel: I painted a lake.","conv_id":"c1","timestamp":"8 May, 2023","speaker":"Mel"}');
    expect(memoryOfDoc(doc!, "team:c1")).toEqual({ key: "c1:D1:2", scope: "team:c1", title: "Mel: I painted a lake.", body: "Mel: I painted a lake." });
    const withContext = memoryOfDoc(doc!, "team:c1", { titleField: "timestamp", previous: 1 }, ["Ann: hello", "Ann: Did you paint?"]);
    expect(withContext.title).toBe("8 May, 2023");
    expect(withContext.body).toBe("Ann: Did you paint?\nMel: I painted a lake.");
    expect(memoryOfDoc(doc!, "team:c1", { contextFields: ["speaker", "timestamp"] }).title).toBe("Mel, 8 May, 2023");
    expect(titleOf(`${"word ".repeat(60)}end`).length).toBeLessThanOrEqual(120);
  });
});
