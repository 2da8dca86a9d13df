package io.apicurio.common.apps.config;

/**
 * Hadir compatibility shim (not Apicurio source).
 *
 * apicurio-registry-app 3.0.9 is compiled against apicurio-registry-config-definitions 3.0.9,
 * where {@link Info#category()} is this enum. Only 3.0.6 of that module is served by the
 * reachable Maven repository, and there the member is a String. This enum carries the
 * constants the 3.0.9 bytecode refers to; together with {@link Info} it shadows the 3.0.6
 * definitions (application classes are loaded first).
 */
public enum ConfigPropertyCategory {
    CATEGORY_API,
    CATEGORY_AUTH,
    CATEGORY_CACHE,
    CATEGORY_CCOMPAT,
    CATEGORY_DOWNLOAD,
    CATEGORY_GITOPS,
    CATEGORY_HEALTH,
    CATEGORY_IMPORT,
    CATEGORY_LIMITS,
    CATEGORY_REDIRECTS,
    CATEGORY_REST,
    CATEGORY_SEMVER,
    CATEGORY_STORAGE,
    CATEGORY_SYSTEM,
    CATEGORY_UI
}
