/* Reads what the core client needs from D-Bus introspection XML (org.freedesktop.DBus.Introspectable):
 * whether an interface has a signal or method, and its signature, so the optional members of the
 * core (mqtt-home-assistant.md section 4.2) are used only when the core really has them. A small
 * scanner of start and end tags, not an XML parser: comments, processing instructions and the
 * DOCTYPE are skipped; anything malformed is an error, never a crash. */
#pragma once

#include "macro.h"

/* The signature of the member 'member' ("signal" or "method" in 'kind') of interface 'iface':
 * every arg's type concatenated (a method's "in" args only). 1 and *ret_signature (caller frees)
 * when found, 0 when the interface or member is not there, -EBADMSG on malformed XML. */
int introspect_member_signature(const char *xml, const char *iface, const char *kind, const char *member,
                                char **ret_signature);
