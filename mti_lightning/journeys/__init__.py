"""The user journeys: search, atlas and compare, each a short composition of the engine
(``shells``) and the built-in world, never importing one another. They live in this folder so
that the public API's functions ``mti.search``, ``mti.atlas`` and ``mti.compare`` name no
package."""
