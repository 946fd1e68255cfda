export { searchProjection, openSearchIndex, StaleGenerationError, DEFAULT_SEARCH_DIR } from "./projection.js";
export type { SearchProjection, SearchProjectionOptions } from "./projection.js";
export { SearchIndex, searchMemories, snippetOf } from "./search-index.js";
export type { SearchHit, SearchOptions } from "./search-index.js";
export type { RetrievalFilter } from "./fulltext-channel.js";
export type { IndexedMemory, IndexChange, MemoryRecord } from "./memory-records.js";
export { tokenizeText } from "./tokenizer.js";
